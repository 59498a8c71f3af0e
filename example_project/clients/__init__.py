"""Example OAuth clients of the demo OpenID Provider, run from the repository root.

Plain scripts, not a Django app: they talk to the site over HTTP with Authlib
and requests only, as a client that nobody here wrote would.

- ``cli.py``: a command-line tool that signs in with the device authorization
  grant (RFC 8628) and keeps its refresh token in a file only its owner can read.
- ``sync.py``: a background job (for cron) that refreshes that token and calls
  the userinfo endpoint, with no user present.
- ``_dpop.py``: both bind their tokens to a key kept next to the token file
  (DPoP, RFC 9449); this builds the proof each request carries.
"""
