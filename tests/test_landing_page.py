"""GET /: a small page, open to anyone, that leads to the docs, the dashboard, the admin, health and the schema."""

from html.parser import HTMLParser

import pytest


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []  # every href and src, in order

    def handle_starttag(self, tag, attrs):
        self.links += [value for name, value in attrs if name in ("href", "src") and value]


def _links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.links


@pytest.mark.django_db
def test_the_landing_page_links_docs_dashboard_admin_health_and_schema_without_login(client):
    response = client.get("/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    links = _links(response.content.decode())
    for path in ("/api/docs/", "/dashboard/", "/admin/", "/health", "/health/ready", "/api/schema/", "/metrics"):
        assert path in links
    # Each link leads somewhere: the docs and health answer, the staff pages ask for a login.
    answers = {path: client.get(path).status_code for path in links if path.startswith("/")}
    assert answers == {
        "/api/docs/": 200,
        "/api/schema/": 200,
        "/dashboard/": 302,
        "/admin/": 302,
        "/health": 200,
        "/health/ready": 200,
        "/metrics": 200,
    }


def test_the_landing_page_loads_nothing_from_another_site(client):
    links = _links(client.get("/").content.decode())

    assert all(link.startswith("/") or link.startswith("data:") for link in links), links
