"""The web view of delivery: what runs where, why it stopped, what waits for a person.

Server-rendered HTML from the API's own FastAPI app, under `/ui/` on `api_listen`
(`mount`). Every page reads the same folds over the ledger the CLI and the API read
(`statusview` over the ingress's `LedgerState`, `replay` over one context's events,
the evaluations the ledger holds, the running reconciler's status), so a page never
disagrees with `reconciler get sequences` or `status`. Charts are inline SVG built
here (`charts`); the one script (`static/ui.js`) only refreshes live pages and sends
approvals with the API token; reading works without it.

Security model (`session`): reading follows the API's auth (`ui_public` opens it);
a browser logs in once with the API token and gets an HttpOnly SameSite=Strict
cookie good for reading only. Approve and decline go through the API's own route,
which takes the token from a header and never from a cookie, so a cross-site form
cannot use a person's session to act. Everything from events, files and labels is
escaped (Jinja2 autoescape; SVG built with markupsafe); pages carry a strict
Content-Security-Policy without inline script.

May import what `reconciler/ingress/` may, plus jinja2 and markupsafe.

The pages are mounted by `reconciler.ui.router.mount`; this package itself imports nothing,
so the parts a reconciler without the API uses (`commits`, for the notifier) come without
FastAPI and Jinja2.
"""
