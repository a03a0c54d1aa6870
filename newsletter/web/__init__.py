"""The web side: the static archive's server and the list's endpoints (`app`), sign-up with
confirmation (`signup`), and the editors' live preview (`preview`).

Starlette and uvicorn are imported by `app` and `preview` only, so the rest of the tool starts
without them; `signup` needs neither.
"""
