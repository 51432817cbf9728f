"""No exception from pushing metrics fails the job (issue 13, case 6).

A real TCP peer that answers a push with something other than HTTP: urllib raises
``http.client.BadStatusLine``, which is not an OSError.
"""

from __future__ import annotations

import logging
import socket
import threading

from protorec.pipeline import monitoring
from protorec.pipeline.monitoring import JobReport, publish


def _report():
    return JobReport(
        job="protorec_test", per_scenario={"feed": {"auc": 0.7}}, values={"exported": 1.0}
    )


def test_gateway_answering_non_http_warns_and_does_not_raise(caplog):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def answer_garbage():
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"SSH-2.0-OpenSSH_9.6 not http\r\n\r\n")

    thread = threading.Thread(target=answer_garbage, daemon=True)
    thread.start()
    try:
        with caplog.at_level(logging.WARNING, logger="protorec.pipeline.monitoring"):
            assert publish(_report(), pushgateway=f"127.0.0.1:{port}", timeout_s=10) is False
    finally:
        thread.join(timeout=10)
        server.close()
    assert "not pushed" in caplog.text and "BadStatusLine" in caplog.text


def test_hung_gateway_times_out_with_a_warning(caplog):
    # accepts the connection (the kernel's backlog does) and never answers
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        with caplog.at_level(logging.WARNING, logger="protorec.pipeline.monitoring"):
            assert publish(_report(), pushgateway=f"127.0.0.1:{port}", timeout_s=1) is False
    finally:
        server.close()
    assert "not pushed" in caplog.text and "timed out" in caplog.text


def test_any_push_exception_is_a_warning(monkeypatch, caplog, tmp_path):
    def boom(*args, **kwargs):
        raise RuntimeError("gateway client bug")

    monkeypatch.setattr(monitoring, "push_to_gateway", boom)
    monkeypatch.setattr(monitoring, "write_to_textfile", boom)
    with caplog.at_level(logging.WARNING, logger="protorec.pipeline.monitoring"):
        assert (
            publish(_report(), pushgateway="127.0.0.1:1", textfile=str(tmp_path / "m.prom"))
            is False
        )
    assert caplog.text.count("RuntimeError: gateway client bug") == 2
