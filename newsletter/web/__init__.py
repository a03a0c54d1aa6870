"""The web side: the static archive's server and the list's endpoints (`app`), sign-up with
confirmation (`signup`), the worker that sends its mail from a durable queue (`outgoing`), the
time bounds on slow clients (`server`), and the editors' live preview (`preview`).

Starlette and uvicorn are imported by `app`, `server` and `preview` only, so the rest of the tool
starts without them; `signup` and `outgoing` need neither.
"""
