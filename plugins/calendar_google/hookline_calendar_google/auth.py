"""`hookline auth google CONFIG`: mint the refresh token the Google backend needs.

Runs Google's installed-app OAuth flow (google-auth-oauthlib's `InstalledAppFlow`) for
the OAuth client named by `[tools.calendar_google]` (`client_id_env`,
`client_secret_env`, or `--client-secrets` with the JSON file the Google Cloud console
downloads), asking for offline access to Google Calendar:

- on a machine with a browser: the consent page opens, Google redirects to a loopback
  port (`http://127.0.0.1:PORT/`) this command listens on, and the code is exchanged;
- `--console`, on a headless server: the URL is printed; open it on any machine, consent,
  and paste back the address the browser was sent to (it fails to load: nothing
  listens there on that machine; the address holds the code), or just the code.

The refresh token is written where the config says (`refresh_token_file`, created with
permissions 0600), or else printed as the `export GOOGLE_REFRESH_TOKEN=...` line (the
variable `refresh_token_env` names) for your secret store; never both.

The alternative with no consent screen: a service account (`service_account_file_env`
names the variable holding its JSON key file's path) with the calendar shared to the
account's email address; see the plugin's README.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from hookline import ConfigError, HooklineError, decode_section, load_config

from .google_calendar import SCOPES
from .settings import CalendarSettings

__all__ = ["add_commands", "store_refresh_token"]

AUTH_URI = "https://accounts.google.com/o/oauth2/auth"
CONSOLE_PORT = 8085  # the loopback address the console mode names in its URL


def add_commands(sub: argparse._SubParsersAction) -> None:
    auth = sub.add_parser("auth", help="mint provider credentials (OAuth)")
    providers = auth.add_subparsers(dest="provider", metavar="PROVIDER", required=True)
    p = providers.add_parser(
        "google",
        help="Google Calendar: run the installed-app OAuth flow, store the refresh token",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument("config", metavar="CONFIG")
    p.add_argument(
        "--client-secrets",
        metavar="FILE",
        help="the OAuth client JSON from the Google Cloud console (default: the client id "
        "and secret from the environment variables the config names)",
    )
    p.add_argument(
        "--console",
        action="store_true",
        help="headless: print the URL and read the redirected address (or code) from stdin",
    )
    p.add_argument("--no-browser", action="store_true", help="print the URL, do not open it")
    p.add_argument(
        "--port", type=int, default=0, help="loopback port for the redirect (default: any)"
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the consent")
    p.set_defaults(func=_auth_google)


def _auth_google(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if "calendar_google" not in config.providers.tools:
        raise ConfigError(
            "the calendar_google tool set is not enabled (add it to providers.tools)",
            file=config.path,
            key="providers.tools",
        )
    raw = config.tools.get("calendar_google")
    settings = decode_section(config, "tools.calendar_google", raw, CalendarSettings)
    if settings.backend != "google" or settings.service_account_file_env:
        what = "backend is local" if settings.backend != "google" else "uses a service account"
        raise ConfigError(
            f"this calendar {what}: it needs no refresh token",
            file=config.path,
            key="tools.calendar_google",
        )
    flow = _flow(args, settings, config.path)
    try:
        if args.console:
            token = _console_flow(flow, args.port or CONSOLE_PORT)
        else:
            token = _loopback_flow(flow, args)
    except HooklineError:
        raise
    except Exception as e:  # oauthlib's and the WSGI server's errors: one line
        raise HooklineError(f"Google OAuth failed: {type(e).__name__}: {e}") from None
    if not token:
        raise HooklineError(
            "Google sent no refresh token (revoke the app's access at "
            "https://myaccount.google.com/permissions and run this again)"
        )
    if settings.refresh_token_file:
        path = config.resolve_path(settings.refresh_token_file)
        store_refresh_token(path, token)
        sys.stdout.write(f"refresh token written to {path} (mode 0600)\n")
    else:
        sys.stdout.write(
            f"# no refresh_token_file in [tools.calendar_google]: keep this secret\n"
            f"export {settings.refresh_token_env or 'GOOGLE_REFRESH_TOKEN'}={token}\n"
        )
    return 0


def _flow(args: argparse.Namespace, settings: CalendarSettings, file: str):
    from google_auth_oauthlib.flow import InstalledAppFlow

    if args.client_secrets:
        try:
            flow = InstalledAppFlow.from_client_secrets_file(args.client_secrets, SCOPES)
        except (OSError, ValueError) as e:
            raise ConfigError(f"--client-secrets {args.client_secrets}: {e}") from None
        if settings.token_uri != CalendarSettings.token_uri:
            flow.client_config["token_uri"] = settings.token_uri
        return flow
    missing = [
        env
        for env in (settings.client_id_env, settings.client_secret_env)
        if not os.environ.get(env)
    ]
    if missing:
        raise ConfigError(
            f"environment variable {missing[0]} is not set (export it, or pass "
            f"--client-secrets with the OAuth client JSON)",
            file=file,
            key="tools.calendar_google",
        )
    client = {
        "installed": {
            "client_id": os.environ[settings.client_id_env],
            "client_secret": os.environ[settings.client_secret_env],
            "auth_uri": AUTH_URI,
            "token_uri": settings.token_uri,
            "redirect_uris": ["http://127.0.0.1"],
        }
    }
    return InstalledAppFlow.from_client_config(client, SCOPES)


def _loopback_flow(flow, args: argparse.Namespace) -> str | None:
    credentials = flow.run_local_server(
        host="127.0.0.1",
        port=args.port,
        open_browser=not args.no_browser,
        authorization_prompt_message="Open this URL in a browser to allow access:\n{url}",
        success_message="hookline has the calendar access it asked for; you may close this tab.",
        timeout_seconds=args.timeout,
        access_type="offline",
        prompt="consent",  # without it Google sends a refresh token only the first time
    )
    return credentials.refresh_token


def _console_flow(flow, port: int) -> str | None:
    flow.redirect_uri = f"http://127.0.0.1:{port}/"
    url, state = flow.authorization_url(access_type="offline", prompt="consent")
    sys.stdout.write(
        "Open this URL in a browser on any machine and allow access:\n"
        f"{url}\n"
        "The browser then goes to an address starting with http://127.0.0.1 that does not "
        "load. Paste that whole address (or just its code) here:\n"
    )
    sys.stdout.flush()
    answer = sys.stdin.readline().strip()
    if not answer:
        raise HooklineError("no address or code given")
    code = answer
    if answer.startswith("http"):
        query = parse_qs(urlsplit(answer).query)
        if "error" in query:
            raise HooklineError(f"Google refused: {query['error'][0]}")
        if query.get("state", [state])[0] != state:
            raise HooklineError("that address is from another attempt (state differs)")
        if not query.get("code"):
            raise HooklineError("that address holds no code")
        code = query["code"][0]
    flow.fetch_token(code=code)
    return flow.credentials.refresh_token


def store_refresh_token(path: Path, token: str) -> None:
    """Write the token readable by this user only (0600), replacing any older one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        os.write(fd, token.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
