"""Security around every call: TLS material and bearer tokens read at start-up, the call gate that authenticates,
authorises admin methods and refuses calls while draining, and the audit log. May import `api` (handler wrapping),
`errors`, `settings`, `vigil.telemetry` and nothing of the request path.
"""
