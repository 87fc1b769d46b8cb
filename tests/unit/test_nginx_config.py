"""deploy/nginx/cluster.conf, the compose cluster's nginx, is gremio/stack/nginx.py's own output."""

from __future__ import annotations

from gremio.stack import nginx


def test_the_compose_nginx_config_is_up_to_date():
    assert nginx.COMPOSE_CONFIG.read_text() == nginx.compose_config(), (
        "regenerate it: python -c 'from gremio.stack import nginx; "
        "nginx.COMPOSE_CONFIG.write_text(nginx.compose_config())'"
    )


def test_the_compose_nginx_spreads_over_every_api_replica_and_logs_to_stderr():
    text = nginx.compose_config()
    assert "server api:8000 " in text and "listen 0.0.0.0:8000;" in text
    assert "error_log stderr warn;" in text and "user nginx;" in text
    # The same rules as make up-cluster's: connection errors only, the client's header replaced.
    assert "proxy_next_upstream error timeout;" in text
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in text
