"""Suppressions per API key in the admin: an operator sees whose each one is, filters by key, and adds one
for one key or (no key) for every key."""

import pytest
from django.contrib.auth.models import User

from emails.models import Suppression

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client):
    client.force_login(User.objects.create_superuser("operator", "op@example.com", "pw"))
    return client


def test_an_operator_suppresses_an_address_for_one_key(operator, bob):
    for_bob = {"address": " Carol@Example.org ", "api_key": bob.api_key.id, "reason": "manual"}

    response = operator.post("/admin/emails/suppression/add/", for_bob)

    assert response.status_code == 302
    suppression = Suppression.objects.get()
    assert (suppression.api_key, suppression.address) == (bob.api_key, "carol@example.org")


def test_the_list_shows_and_filters_suppressions_by_key(operator, alice, bob):
    Suppression.objects.create(api_key=alice.api_key, address="alices-bounce@example.org", reason="bounced")
    Suppression.objects.create(api_key=bob.api_key, address="bobs-bounce@example.org", reason="bounced")
    Suppression.objects.create(api_key=None, address="everyones@example.org", reason="manual")

    listed = operator.get("/admin/emails/suppression/").content.decode()
    bobs = operator.get(f"/admin/emails/suppression/?api_key__id__exact={bob.api_key.id}").content.decode()
    every_keys = operator.get("/admin/emails/suppression/?api_key__isnull=True").content.decode()

    assert all(a in listed for a in ("alices-bounce@", "bobs-bounce@", "everyones@"))
    assert f">{alice.api_key}<" in listed and f">{bob.api_key}<" in listed
    assert "bobs-bounce@" in bobs and "alices-bounce@" not in bobs and "everyones@" not in bobs
    assert "everyones@" in every_keys and "bobs-bounce@" not in every_keys


def test_a_differently_written_duplicate_is_a_form_error_not_a_500(operator, bob):
    Suppression.objects.create(api_key=bob.api_key, address="carol@example.org", reason="bounced")
    Suppression.objects.create(api_key=None, address="dave@example.org", reason="manual")

    for_bob = {"address": "CAROL@example.org ", "api_key": bob.api_key.id, "reason": "manual"}
    for_every_key = {"address": " Dave@Example.org", "reason": "manual"}
    responses = [operator.post("/admin/emails/suppression/add/", data) for data in (for_bob, for_every_key)]

    assert [r.status_code for r in responses] == [200, 200]  # the form again, with its error
    assert all('class="errorlist nonfield"' in r.content.decode() for r in responses)
    assert Suppression.objects.count() == 2
