"""The ``/teachfile`` HTTP surface: plain functions from a request to a status and JSON.

``types`` holds the request and response types, ``routes`` the table of endpoints and the
status, refusal, profile and audit handlers, ``cases`` and ``casesearch`` the teaching cases and
the network search.
"""
