"""Keys and rate limits part by part, without a server: the keys file's parsing and its
messages, creating and revoking keys (permissions, atomic rewrite), the key ring's re-read
interval and its answer to a broken file, the presented key's headers, rate strings, and the
token bucket against a hand-driven clock."""

from __future__ import annotations

import os
import re

import pytest

from service.access import (
    KEY_PREFIX,
    KeyRing,
    Rate,
    RateLimiter,
    create_key,
    digest,
    from_env,
    parse_keys,
    presented_key,
    retry_after,
    revoke_key,
)
from vision.errors import DataError

H1, H2 = "a" * 64, "0123456789abcdef" * 4


def test_parse_keys_skips_comments_and_blanks_and_keeps_each_name():
    text = f"# team keys\n\n  alice:{H1}  \n\t\nbob.ci-1_x:{H2}\n"
    assert parse_keys(text, "k.txt") == {"alice": H1, "bob.ci-1_x": H2}
    assert parse_keys("", "k.txt") == {}


@pytest.mark.parametrize(
    ("line", "got"),
    [
        (f"alice:{H1.upper()}", None),  # uppercase hex
        (f"alice:{H1[:-1]}", None),  # 63 digits
        (f"alice:{H1}0", None),  # 65
        (f"al ice:{H1}", None),  # a space in the name
        (f":{H1}", None),  # no name
        (f"{'n' * 65}:{H1}", None),  # a name over 64
        ("alice", "'alice'"),  # no separator
        (f"alice-with-a-long-name:{H1[:9]}", "'alice-with-a-long-na…'"),  # cut at 20
        ("twenty-characters-ab", "'twenty-characters-ab'"),  # 20: whole
        ("twenty-one-characters", "'twenty-one-character…'"),  # 21: cut
    ],
)
def test_parse_keys_names_the_line_what_was_expected_and_what_came(line, got):
    text = f"# header\nok:{H2}\n{line}\n"
    with pytest.raises(DataError) as e:
        parse_keys(text, "keys.txt")
    msg = str(e.value)
    assert msg.startswith("keys.txt:3: expected name:sha256-hex (64 lowercase hex digits), got ")
    shown = msg.split(", got ", 1)[1]
    assert shown == (got or repr(line[:20] + ("…" if len(line) > 20 else "")))


def test_parse_keys_refuses_a_name_twice():
    with pytest.raises(DataError, match=r"^k:2: expected each key name once, got 'a' again$"):
        parse_keys(f"a:{H1}\na:{H2}\n", "k")


def test_create_key_appends_a_hash_only_and_keeps_the_file_private(tmp_path):
    path = tmp_path / "a" / "b" / "keys.txt"  # the folders are made
    k1 = create_key(path, "alice")
    k2 = create_key(path, "bob")
    assert k1.startswith(KEY_PREFIX) and len(k1) == len(KEY_PREFIX) + 43  # 32 bytes, base64url
    assert k1 != k2 and re.fullmatch(r"vk_[A-Za-z0-9_-]{43}", k2)
    assert path.read_text() == f"alice:{digest(k1)}\nbob:{digest(k2)}\n"
    assert k1 not in path.read_text()
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert KeyRing(path).name_of(k2) == "bob"


def test_create_key_refuses_a_bad_or_taken_name(tmp_path):
    path = tmp_path / "keys.txt"
    with pytest.raises(DataError) as e:
        create_key(path, "no spaces")
    assert str(e.value) == (
        "key name: expected 1-64 letters, digits, '_', '-' or '.', got 'no spaces'"
    )
    assert not path.exists()
    create_key(path, "alice")
    before = path.read_text()
    with pytest.raises(DataError) as e:
        create_key(path, "alice")
    assert str(e.value) == (
        f"{path}: expected a new key name, got 'alice' already there (revoke it first)"
    )
    assert path.read_text() == before


def test_create_and_revoke_name_a_broken_keys_file(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text("ok:nothex\n")
    for call in (lambda: create_key(path, "alice"), lambda: revoke_key(path, "ok")):
        with pytest.raises(DataError) as e:
            call()
        assert str(e.value).startswith(f"{path}:1: expected name:sha256-hex")
    assert path.read_text() == "ok:nothex\n"


def test_revoke_key_rewrites_the_file_without_that_line(tmp_path):
    path = tmp_path / "keys.txt"
    keys = {n: create_key(path, n) for n in ("alice", "bob", "carol")}
    revoke_key(path, "bob")
    assert path.read_text() == f"alice:{digest(keys['alice'])}\ncarol:{digest(keys['carol'])}\n"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.txt"]  # no temporary left
    with pytest.raises(DataError) as e:
        revoke_key(path, "bob")
    assert str(e.value) == f"{path}: expected a key named 'bob', got names ['alice', 'carol']"
    with pytest.raises(DataError, match=r"expected a key named 'x', got names \[\]$"):
        revoke_key(tmp_path / "none.txt", "x")


def test_key_ring_rereads_at_its_interval_and_refuses_all_on_a_broken_file(tmp_path, monkeypatch):
    import service.access as access

    now = [100.0]
    monkeypatch.setattr(access.time, "monotonic", lambda: now[0])
    path = tmp_path / "keys.txt"
    alice = create_key(path, "alice")
    ring = KeyRing(path)  # the file looked at again at most once a second
    assert ring.name_of(alice) == "alice"
    assert ring.name_of(None) is None and ring.name_of("") is None
    assert ring.name_of(alice + "x") is None
    bob = create_key(path, "bob")
    now[0] += 0.999  # not yet looked at again
    assert ring.name_of(bob) is None
    now[0] += 0.001  # one interval after the last look
    assert ring.name_of(bob) == "bob" and ring.name_of(alice) == "alice"
    path.write_text("broken\n")
    now[0] += 1.0
    assert ring.name_of(alice) is None and ring.keys == {}
    path.write_text(f"alice:{digest(alice)}\n")
    os.utime(path, ns=(1, 1))  # another stamp than the broken file's
    now[0] += 1.0
    assert ring.name_of(alice) == "alice"
    path.unlink()
    now[0] += 1.0
    assert ring.name_of(alice) is None and ring.keys == {}


def test_key_ring_fails_at_start_on_a_broken_file(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text("oops\n")
    with pytest.raises(DataError, match=r"keys.txt:1: expected name:sha256-hex"):
        KeyRing(path)


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({"authorization": "Bearer vk_1"}, "vk_1"),
        ({"authorization": "bearer   vk_2  "}, "vk_2"),
        ({"authorization": "BEARER vk_3", "x-api-key": "other"}, "vk_3"),
        ({"authorization": "Basic abc", "x-api-key": "vk_4"}, "vk_4"),
        ({"x-api-key": "vk_5"}, "vk_5"),
        ({"x-api-key": ""}, None),
        ({"authorization": "Basic abc"}, None),
        ({}, None),
    ],
)
def test_presented_key_reads_bearer_then_x_api_key(headers, key):
    assert presented_key(headers) == key


@pytest.mark.parametrize(
    ("text", "per_s", "burst"),
    [
        ("20/s,burst=40", 20.0, 40.0),
        (" 20 / sec , burst = 5 ", 20.0, 5.0),
        ("20/s", 20.0, 20.0),  # per second: a second's worth
        ("20/sec", 20.0, 20.0),
        ("0.5/s", 0.5, 1.0),  # at least 1
        ("600/min", 10.0, 1.0),  # per minute or hour: 1 unless given
        ("3600/h,burst=10", 1.0, 10.0),
        ("90/min,burst=1", 1.5, 1.0),
    ],
)
def test_rate_strings(text, per_s, burst):
    assert Rate.parse(text) == Rate(per_s, burst)


@pytest.mark.parametrize("text", ["", "20", "20/d", "0/s", "-1/s", "20/s,burst", "x/s"])
def test_bad_rate_strings_say_what_is_expected(text):
    with pytest.raises(DataError) as e:
        Rate.parse(text)
    assert str(e.value) == (
        f"VISION_RATE: expected N/s, N/min or N/h, optionally ',burst=M' (N > 0), got {text!r}"
    )


def test_a_burst_below_one_is_refused():
    with pytest.raises(DataError) as e:
        Rate.parse("5/s,burst=0.5")
    assert str(e.value) == "VISION_RATE: expected a burst of at least 1, got '5/s,burst=0.5'"


def test_token_bucket_admits_the_burst_then_says_how_long_to_wait():
    now = [0.0]
    lim = RateLimiter(Rate(per_s=2.0, burst=3.0), clock=lambda: now[0])
    assert [lim.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert lim.take("a") == pytest.approx(0.5)  # one token at 2/s
    assert lim.take("b") == 0.0  # each client its own bucket
    now[0] = 0.25
    assert lim.take("a") == pytest.approx(0.25)  # half a token back
    now[0] = 0.5
    assert lim.take("a") == 0.0  # exactly one token: admitted
    assert lim.buckets["a"] == pytest.approx((0.0, 0.5))
    now[0] = 100.0  # refilled, but never past the burst
    assert [lim.take("a") for _ in range(4)][:3] == [0.0, 0.0, 0.0]
    assert lim.buckets["a"][0] == pytest.approx(0.0)


def test_idle_full_buckets_are_forgotten_past_ten_thousand_clients():
    now = [0.0]
    lim = RateLimiter(Rate(per_s=2.0, burst=1.0), clock=lambda: now[0])  # full after 0.5 s
    for i in range(9_999):
        lim.take(f"c{i}")
    now[0] = 10.0
    lim.take("tenth-thousand")  # 10,000 buckets: not over the bound, nothing forgotten
    assert len(lim.buckets) == 10_000
    now[0] = 10.5  # "tenth-thousand" exactly full again: forgotten, as the idle ones
    lim.take("x")  # 10,001 buckets: over the bound
    assert set(lim.buckets) == {"x"}
    for i in range(10_000):
        lim.take(f"d{i}")
    now[0] = 10.9  # 0.4 s idle: not yet full, kept
    lim.take("y")
    assert len(lim.buckets) == 10_002


@pytest.mark.parametrize(("wait", "header"), [(0.0, "1"), (0.2, "1"), (1.0, "1"), (1.01, "2")])
def test_retry_after_is_whole_seconds_at_least_one(wait, header):
    assert retry_after(wait) == header


def test_from_env(tmp_path):
    assert from_env({}) == (None, None)
    path = tmp_path / "keys.txt"
    key = create_key(path, "ci")
    ring, lim = from_env({"VISION_API_KEYS_FILE": str(path), "VISION_RATE": "4/s"})
    assert ring.name_of(key) == "ci" and lim.rate == Rate(4.0, 4.0)
