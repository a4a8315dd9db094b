"""A webhook URL is called only when every address its host resolves to is public: the metadata endpoint,
loopback, private networks and names that resolve to them are refused, unless private targets are allowed."""

import pytest

from infra.addresses import UnsafeTarget, checked_addresses


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:8080/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "https://10.0.0.5/hook",
        "http://192.168.1.1/hook",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        # IPv6 forms carrying an inside IPv4 address: NAT64, IPv4-compatible, SIIT, 6to4; and site-local.
        "http://[64:ff9b::a00:1]/hook",
        "http://[64:ff9b::a9fe:a9fe]/hook",
        "http://[64:ff9b:1::a00:1]/hook",
        "http://[::7f00:1]/hook",
        "http://[::ffff:0:7f00:1]/hook",
        "http://[2002:7f00:1::1]/hook",
        "http://[2002:a9fe:a9fe::1]/hook",
        "http://[fec0::1]/hook",
        "http://[fe80::1]/hook",
    ],
)
def test_a_url_reaching_inside_the_network_is_refused(url):
    with pytest.raises(UnsafeTarget, match="private, loopback or link-local"):
        checked_addresses(url, allow_private=False)


def test_allowing_private_targets_lets_a_loopback_receiver_in():
    assert checked_addresses("http://127.0.0.1:9000/hook", allow_private=True) == ("127.0.0.1", 9000, ["127.0.0.1"])


@pytest.mark.parametrize("address", ["2606:4700::1111", "64:ff9b::5db8:d70e", "2002:5db8:d70e::1"])
def test_a_public_ipv6_address_is_taken_also_when_it_carries_a_public_ipv4_one(address):
    assert checked_addresses(f"http://[{address}]/hook", allow_private=False)[2] == [address]


def test_a_public_address_is_taken_with_its_default_port():
    assert checked_addresses("https://93.184.215.14/hook", allow_private=False) == (
        "93.184.215.14",
        443,
        ["93.184.215.14"],
    )


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/hook", "http:// or https://"),
        ("http:///hook", "http:// or https://"),
        ("https://user:pass@93.184.215.14/hook", "user name or password"),
        ("http://93.184.215.14:99999/hook", "port"),
        ("http://93.184.215.14:0/hook", "port"),
        ("http://no-such-host.invalid/hook", "does not resolve"),
        ("https://[nothing/hook", "cannot be read"),
    ],
)
def test_a_url_that_cannot_be_called_says_why(url, why):
    with pytest.raises(UnsafeTarget, match=why):
        checked_addresses(url, allow_private=False)
