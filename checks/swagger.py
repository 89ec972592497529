"""Swagger UI and ReDoc as a new user meets them on a machine with no internet: headless
Chromium, every request that leaves 127.0.0.1 refused. /docs must render, Authorize must
log in through the OAuth2 password form, and "Try it out" on GET /api/auth/me must answer
200; /redoc must render the API's title and its operations."""

from __future__ import annotations

import os
import sys
from urllib.parse import urlsplit

from playwright.sync_api import Page, Route, sync_playwright

from checks.live import DEMO, fresh_server

CHROMIUM = os.environ.get("BANK_CHROMIUM", "/usr/bin/chromium")
# As the machine's own notes advise: no background connections, no first-run work.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 20_000


def offline(refused: list[str], cosmetic: list[str]):  # type: ignore[no-untyped-def]
    """Refuse every request off this machine. A script, style sheet, font or API call
    the pages wanted from elsewhere is a failure; an image (ReDoc's "API docs by Redocly"
    logo comes from cdn.redoc.ly) leaves the page working and is only reported."""

    def handle(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
            return
        kind = route.request.resource_type
        (cosmetic if kind == "image" else refused).append(f"{kind} {route.request.url}")
        route.abort("internetdisconnected")

    return handle


def swagger_try_it_out(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/docs")
    page.locator(".swagger-ui .info .title").filter(has_text="API").wait_for()
    title = page.locator(".swagger-ui .info .title").inner_text().splitlines()[0]
    print(f"  ok: /docs rendered {title!r}")

    username, password = DEMO["customer"]
    page.locator(".scheme-container button.authorize").click()
    page.locator("#oauth_username").fill(username)
    page.locator("#oauth_password").fill(password)
    page.locator(".auth-btn-wrapper button.authorize").click()
    page.locator(".auth-container").filter(has_text="Authorized").first.wait_for()
    page.locator(".auth-btn-wrapper button.btn-done").click()
    print(f"  ok: Authorize logged in as {username}")

    operation = page.locator(".opblock-get").filter(has_text="/api/auth/me").first
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    operation.locator("button.execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    body = operation.locator(".live-responses-table tbody .response-col_description").first
    if status.inner_text().strip() != "200" or f'"{username}"' not in body.inner_text():
        raise SystemExit(f"Try it out on /api/auth/me: {status.inner_text()} {body.inner_text()}")
    print("  ok: Try it out on GET /api/auth/me -> 200 with the user")


def redoc_renders(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/redoc")
    page.locator("h1").filter(has_text="API").first.wait_for()
    page.locator("h2").filter(has_text="Transfer to any account in the same currency").wait_for()
    print("  ok: /redoc rendered the title and the operations")


def main() -> None:
    refused: list[str] = []
    cosmetic: list[str] = []
    with fresh_server() as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            context = browser.new_context()
            context.set_default_timeout(TIMEOUT_MS)
            context.route("**/*", offline(refused, cosmetic))
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            swagger_try_it_out(page, server.base_url)
            redoc_renders(page, server.base_url)
        finally:
            browser.close()
    if cosmetic:
        print("  note: images refused (the pages work without them):", *cosmetic)
    if refused:
        print("the pages asked for resources off this machine:", *refused, sep="\n  ")
        sys.exit(1)
    if errors:
        print("script errors on the pages:", *errors, sep="\n  ")
        sys.exit(1)
    print("Swagger UI and ReDoc work offline")


if __name__ == "__main__":
    main()
