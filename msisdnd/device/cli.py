"""C{msisdn-client}: verify a number against an msisdnd server from the shell.

    msisdn-client verify +33612345678 --server https://verify.example.com
    msisdn-client verify +33612345678 --server http://127.0.0.1:8000 \\
        --fake-smsc http://127.0.0.1:8025 --format jwt
    msisdn-client verify +33612345678 --server http://127.0.0.1:8000 \\
        --fake-smsc http://127.0.0.1:8025 --mo

C{verify} runs a whole session with L{msisdnd.device.client.MSISDNClient}:

  - MT (the default): register, ask for a code by SMS (a 6-digit one unless
    C{--long}), read it, post it back;
  - C{--mo} (the silent SMS, needs C{--fake-smsc}): discover the
    C{moVerifier} number, register, have the fake SMSC deliver
    C{/sms/momt/verify <hawk id>} from the number to it, read the 32-hex code
    that comes back, post it;

then make an RSA key pair, have it certified, verify the certificate against
the server's published keys and check it certifies our key, and print one
JSON document (C{msisdn}, C{format}, C{certificate}, C{claims}) on stdout.

The code is read from the fake SMSC's C{GET /receive?to=} when
C{--fake-smsc} is given, else typed on stdin after a C{Code: } prompt
(written to stderr, so that stdout holds only the JSON).

Exit status: 0 verified, 1 failed (one C{error: ...} line on stderr), 2 bad
arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO
from urllib.parse import quote

import jwt
import phonenumbers
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from treq.client import HTTPClient
from twisted.internet import task, threads
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError
from twisted.internet.error import TimeoutError as InternetTimeoutError
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed

from msisdnd.device.client import (
    APIError,
    MSISDNClient,
    ProtocolError,
    generate_browserid_keypair,
    verify_certificate,
)

POLL_INTERVAL = 0.2
"""Seconds between two looks at the fake SMSC's C{/receive}."""

POLL_DEADLINE = 20.0
"""Seconds to wait for the code to reach the fake SMSC."""

#: Reads the code: called with the prompt, fires with what was typed.
Prompt = Callable[[str], "Deferred[str]"]


class CLIError(Exception):
    """A failure the command reports as C{error: <message>}."""


def build_parser() -> argparse.ArgumentParser:
    """The C{msisdn-client} argument parser."""
    parser = argparse.ArgumentParser(
        prog="msisdn-client",
        description="Reference client of the msisdnd phone-number verification API.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    verify = commands.add_parser(
        "verify", help="verify a number and get a certificate for a new key",
        description="Verify NUMBER (E.164) and print the certificate's claims as JSON.")
    verify.add_argument("number", metavar="NUMBER", help="the phone number, E.164 (+33612345678)")
    verify.add_argument("--server", required=True, metavar="URL",
                        help="the server's public URL, with its path prefix if any")
    verify.add_argument("--mcc", default="208", help="mobile country code (default 208)")
    verify.add_argument("--mnc", default=None, help="mobile network code")
    verify.add_argument("--fake-smsc", default=None, metavar="URL",
                        help="read the code from this fake SMSC's HTTP side "
                             "instead of asking on stdin")
    verify.add_argument("--mo", action="store_true",
                        help="the silent-SMS flow (needs --fake-smsc to send the MO)")
    verify.add_argument("--format", choices=("browserid", "jwt"), default="browserid",
                        help="certificate format (default browserid)")
    verify.add_argument("--duration", type=int, default=3600,
                        help="certificate lifetime asked for, seconds (default 3600)")
    verify.add_argument("--audience", default=None,
                        help="the relying party a JWT certificate is for")
    verify.add_argument("--long", action="store_true",
                        help="ask for a 32-hex code instead of a 6-digit one (MT flow)")
    return parser


def _stdin_prompt(err: TextIO) -> Prompt:
    """Ask on C{err}, read a line of stdin in a thread (the reactor keeps running)."""

    def prompt(text: str) -> Deferred[str]:
        err.write(text)
        err.flush()

        def read() -> str:
            line = sys.stdin.readline()
            if not line:
                raise CLIError("no code entered (end of input)")
            return line.strip()

        return threads.deferToThread(read)

    return prompt


def _e164(number: str) -> str:
    """C{number} in E.164 (C{+33 6 12 34 56 78} -> C{+33612345678}), else unchanged.

    The fake SMSC matches numbers digit for digit, so the number it is asked
    about must be written as the server writes it; one that does not parse
    is left for the server to refuse.
    """
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return number
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _code_from(text: str, short: bool) -> str:
    """The code in an SMS: the last word of its first line, or the whole text."""
    if not short:
        return text.strip()
    first = (text.strip().splitlines() or [""])[0].split()
    if not first:
        raise CLIError("the SMS holds no code")
    return first[-1]


class _FakeSMSC:
    """The bits of the fake SMSC's HTTP side the command uses."""

    def __init__(self, url: str, http: HTTPClient, reactor: Any) -> None:
        self.url = url.rstrip("/")
        self.http = http
        self.reactor = reactor

    async def messages(self, number: str) -> list[dict]:
        response = await self.http.get(f"{self.url}/receive?to={quote(number, safe='')}",
                                       timeout=10)
        body = await response.json()
        if response.code != 200 or not isinstance(body, list):
            raise CLIError(f"the fake SMSC answered {response.code} to /receive")
        return body

    async def sendMO(self, source: str, destination: str, text: str) -> None:
        response = await self.http.post(f"{self.url}/mo", json={
            "from": source, "to": destination, "text": text}, timeout=15)
        body = await response.json()
        if response.code != 200:
            reason = body.get("error") if isinstance(body, dict) else body
            raise CLIError(f"the fake SMSC could not deliver the MO: {reason} "
                           f"(HTTP {response.code})")

    async def nextMessage(self, number: str, seen: int) -> str:
        """The text of the newest message to C{number} once there are more than C{seen}."""
        deadline = self.reactor.seconds() + POLL_DEADLINE
        while True:
            messages = await self.messages(number)
            if len(messages) > seen:
                return str(messages[-1]["text"])
            if self.reactor.seconds() >= deadline:
                raise CLIError(f"no SMS reached {number} within {POLL_DEADLINE:g} s")
            await task.deferLater(self.reactor, POLL_INTERVAL, lambda: None)


def _check_binding(claims: dict, fmt: str, public_key_json: str) -> None:
    """Fail unless the certificate certifies the key we sent."""
    ours = json.loads(public_key_json)
    if fmt == "browserid":
        bound = claims.get("public-key") == ours
    else:
        key = rsa.RSAPublicNumbers(int(ours["e"]), int(ours["n"])).public_key()
        jwk = RSAAlgorithm.to_jwk(key, as_dict=True)
        cnf = (claims.get("cnf") or {}).get("jwk") or {}
        bound = (cnf.get("kty"), cnf.get("n"), cnf.get("e")) == ("RSA", jwk["n"], jwk["e"])
    if not bound:
        raise CLIError("the certificate does not certify our key")


async def _verify(reactor: Any, args: argparse.Namespace, out: TextIO, http: HTTPClient,
                  prompt: Prompt) -> None:
    client = MSISDNClient(args.server, treq_client=http, clock=reactor)
    fake = _FakeSMSC(args.fake_smsc, http, reactor) if args.fake_smsc else None
    short = not (args.long or args.mo)
    number = _e164(args.number)
    if args.mo:
        if fake is None:
            raise CLIError("--mo needs --fake-smsc to send the silent SMS")
        found = await client.discover(args.mcc, args.mnc)
        details = found.get("verificationDetails", {}).get("sms/momt")
        if "sms/momt" not in found.get("verificationMethods", ()) or not details:
            raise CLIError(f"the server offers no silent-SMS verification for MCC {args.mcc}")
        await client.register()
        seen = len(await fake.messages(number))
        await fake.sendMO(number, str(details["moVerifier"]).lstrip("+"),
                          f"/sms/momt/verify {client.hawkId}")
        code = _code_from(await fake.nextMessage(number, seen), short=False)
    else:
        await client.register()
        seen = len(await fake.messages(number)) if fake is not None else 0
        await client.mtVerify(number, args.mcc, args.mnc, short=short)
        if fake is not None:
            code = _code_from(await fake.nextMessage(number, seen), short)
        else:
            code = (await prompt("Code: ")).strip()
    msisdn = await client.verifyCode(code)

    _, public_key_json = generate_browserid_keypair()
    cert = await client.sign(public_key_json, args.duration, fmt=args.format,
                             audience=args.audience)
    keys = await (client.jwks() if args.format == "jwt" else client.wellKnown())
    claims = verify_certificate(cert, keys, audience=args.audience)
    _check_binding(claims, args.format, public_key_json)
    json.dump({"msisdn": msisdn, "format": args.format, "certificate": cert, "claims": claims},
              out, indent=2, sort_keys=True)
    out.write("\n")


def run_verify(reactor: Any, args: argparse.Namespace, out: TextIO,
               err: TextIO | None = None, prompt: Prompt | None = None) -> Deferred[int]:
    """The C{verify} command, on a running reactor.

    @param args: parsed by L{build_parser} (C{args.command == "verify"}).
    @param out: where the JSON result goes.
    @param err: where the C{error:} line and the prompt go; default stderr.
    @param prompt: reads the code when there is no C{--fake-smsc}; default
        a prompt on C{err} and a line of stdin read in a thread.
    @return: fires with the exit status, 0 or 1; never fails.
    """
    err = sys.stderr if err is None else err
    pool = HTTPConnectionPool(reactor, persistent=True)
    http = HTTPClient(Agent(reactor, pool=pool))

    async def run() -> int:
        try:
            await _verify(reactor, args, out, http, prompt or _stdin_prompt(err))
        except APIError as e:
            err.write(f"error: {e}\n")
            return 1
        except (CLIError, ProtocolError, jwt.InvalidTokenError) as e:
            err.write(f"error: {e}\n")
            return 1
        except ResponseFailed as e:
            why = "; ".join(r.getErrorMessage() for r in e.reasons)
            err.write(f"error: the connection failed: {why}\n")
            return 1
        except (ConnectError, InternetTimeoutError) as e:
            err.write(f"error: cannot connect: {e}\n")
            return 1
        except Exception as e:  # noqa: BLE001 -- one line, never a traceback
            err.write(f"error: {type(e).__name__}: {e}\n")
            return 1
        finally:
            await pool.closeCachedConnections()
        return 0

    return Deferred.fromCoroutine(run())


def main(argv: Sequence[str] | None = None) -> int:
    """The C{msisdn-client} console script.

    @return: the exit status (0, 1, or 2 for bad arguments).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    if args.mo and not args.fake_smsc:
        parser.print_usage(sys.stderr)
        sys.stderr.write("msisdn-client verify: error: --mo needs --fake-smsc URL\n")
        return 2

    async def command(reactor: Any) -> None:
        status = await run_verify(reactor, args, sys.stdout)
        if status:
            raise SystemExit(status)

    try:
        task.react(command)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
