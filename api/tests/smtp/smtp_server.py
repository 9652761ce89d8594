"""A real SMTP server for the alert e-mail test (aiosmtpd): STARTTLS and AUTH required.

Prints {"port": N} once listening, then one JSON line per message accepted. Recipients
whose local part is `refused` get 550 (a permanent refusal), those named `busy` 451 (try
later), so that the test sees both outcomes in tollbook's delivery log.

Usage: smtp_server.py --user U --password P --cert server.pem --key server.key
"""

import argparse
import asyncio
import email
import email.policy
import json
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local == "refused":
            return "550 5.1.1 no such mailbox"
        if local == "busy":
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        print(
            json.dumps(
                {
                    "mail_from": envelope.mail_from,
                    "rcpt_tos": envelope.rcpt_tos,
                    "from": str(message["from"]),
                    "to": str(message["to"]),
                    "subject": str(message["subject"]),
                    "message_id": str(message["message-id"]),
                    "content_type": message.get_content_type(),
                    "body": message.get_content(),
                    "login": session.auth_data.login.decode() if session.auth_data else None,
                    "tls": session.ssl is not None,
                }
            ),
            flush=True,
        )
        return "250 2.0.0 accepted"


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == user and auth_data.password == password
        return AuthResult(success=ok, auth_data=auth_data if ok else None)

    return check


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    user, password = args.user.encode(), args.password.encode()

    def smtp():
        return SMTP(
            Handler(),
            hostname="smtp.test",
            tls_context=context,
            require_starttls=True,
            authenticator=authenticator(user, password),
            auth_required=True,
        )

    loop = asyncio.get_running_loop()
    # Port 0: the system picks a free port, so parallel tests never race for one.
    server = await loop.create_server(smtp, "127.0.0.1", 0)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
