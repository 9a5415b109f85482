"""Command-line adapter: parse, call a service, render. No biometric logic lives here."""
