"""Both email backends: the .eml outbox, and SendGrid through its official SDK against a local sink."""

import json
import threading
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from app.integrations.email import Mail, OutboxBackend, SendGridBackend


def test_outbox_writes_one_eml_per_message(tmp_path):
    backend = OutboxBackend(str(tmp_path / "outbox"), "PeerTest Hub <no-reply@peertest.local>")
    first = backend.send(Mail("a@example.com", "Hello", "Token: abc\n"))
    backend.send(Mail("b@example.com", "Again", "body"))
    files = sorted(Path(tmp_path / "outbox").glob("*.eml"))
    assert len(files) == 2 and first in map(str, files)
    parsed = message_from_bytes(Path(first).read_bytes())
    assert parsed["To"] == "a@example.com" and parsed["Subject"] == "Hello"
    assert "Token: abc" in parsed.get_payload(decode=True).decode()


def test_sendgrid_backend_posts_the_mail_send_payload():
    received = {}

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.update(path=self.path, auth=self.headers["Authorization"], json=json.loads(body))
            self.send_response(202)
            self.send_header("X-Message-Id", "msg-1")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        backend = SendGridBackend("SG.test-key", f"http://127.0.0.1:{server.server_port}", "no-reply@peertest.local")
        message_id = backend.send(Mail("tess@example.com", "Verify", "Token: xyz"))
    finally:
        server.shutdown()
    assert message_id == "msg-1"
    assert received["path"] == "/v3/mail/send" and received["auth"] == "Bearer SG.test-key"
    payload = received["json"]
    assert payload["from"] == {"email": "no-reply@peertest.local"}
    assert payload["personalizations"][0]["to"] == [{"email": "tess@example.com"}]
    assert payload["subject"] == "Verify"
    assert payload["content"] == [{"type": "text/plain", "value": "Token: xyz"}]


async def test_a_token_mail_queues_only_the_address_and_is_sent_once(actors):
    """The verification mail is an outbox task written with the account. The task and its queue
    message carry only the address: the worker issues the token and mails it at once, so the raw
    token is never stored in MongoDB nor sent through Redis."""
    from rq import Queue

    from app.kit.queue import QUEUE_NAMES
    from app.kit.redis import get_sync_redis
    from app.outbox.models import OutboxTask
    from tests.fixtures.factories import drain_jobs, outbox, token_from_mail

    user = await actors.register("tester")
    [task] = await OutboxTask.find({"_id": {"$regex": "^send_verification:"}}).to_list()
    assert task.args == [user["email"]]
    queued = [job for name in QUEUE_NAMES for job in Queue(name, connection=get_sync_redis()).jobs]
    assert queued and all(job.args == (task.id,) for job in queued)
    await drain_jobs()
    [mail] = outbox(user["email"])
    token = token_from_mail(mail)
    assert token not in str(task.model_dump()) and token not in str((await OutboxTask.get(task.id)).model_dump())
    assert "Tester" not in mail.get_payload()  # no user-chosen text (the display name) in the mail
    assert (await OutboxTask.get(task.id)).status == "done"
    await drain_jobs()
    assert len(outbox(user["email"])) == 1
