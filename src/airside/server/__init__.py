"""The Airside server: an HTTP adapter over the services (``airside serve``).

Like the CLI it parses, calls a service and renders: authentication ends in a
``Principal``, every use-case is a service function (authorise, act, audit in one
transaction), and service errors become RFC 9457 problems (``problems.py``). It never
opens a store session itself. docs/api.md.
"""
