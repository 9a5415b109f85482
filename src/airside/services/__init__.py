"""Use-cases. Every biometric operation goes through here: purpose, consent, audit."""
