"""The login throttle's policy, on a clock the test moves: buckets refill at their rate, only
failures cost, the tables never grow past their capacity whatever keys an attacker invents, and
a user name under attack stays throttled while the attacker cycles through others."""

from __future__ import annotations

import pytest

from tke.internal.auth.throttle import KEY_LENGTH, Buckets, Limit, LoginThrottle, client_address


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_one_attempt_per_interval() -> None:
    clock = Clock()
    buckets = Buckets(Limit(burst=3, interval=10.0), capacity=100, clock=clock)
    assert [buckets.take("alice") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("alice") == pytest.approx(10.0)
    clock.now += 4
    assert buckets.take("alice") == pytest.approx(6.0)  # refused attempts cost nothing more
    clock.now += 6
    assert buckets.take("alice") == 0.0
    assert buckets.take("alice") == pytest.approx(10.0)
    assert buckets.take("bob") == 0.0  # every key has its own bucket
    clock.now += 1000
    assert [buckets.take("alice") for _ in range(4)][-1] > 0  # refilled to the burst, never beyond


def test_successes_give_their_token_back() -> None:
    throttle = LoginThrottle(Limit(2, 60.0), Limit(5, 60.0), capacity=100, clock=Clock())
    for _ in range(50):
        assert throttle.attempt("alice", "ipv4:10.0.0.1:40000") == (0.0, "")
        throttle.succeeded("alice", "ipv4:10.0.0.1:40001")
    assert throttle.attempt("alice", "ipv4:10.0.0.1:40002") == (0.0, "")
    assert throttle.attempt("alice", "ipv4:10.0.0.1:40002") == (0.0, "")
    wait, what = throttle.attempt("alice", "ipv4:10.0.0.1:40002")
    assert wait > 0 and what == "this user name"


def test_a_client_is_limited_across_user_names_and_ports() -> None:
    throttle = LoginThrottle(Limit(5, 60.0), Limit(3, 60.0), capacity=100, clock=Clock())
    for i in range(3):
        assert throttle.attempt(f"user{i}", f"ipv4:192.0.2.7:{5000 + i}") == (0.0, "")
    wait, what = throttle.attempt("user9", "ipv4:192.0.2.7:6000")
    assert wait == pytest.approx(60.0) and what == "this client"
    assert throttle.attempt("user9", "ipv4:192.0.2.8:6000") == (0.0, "")  # another client
    # An IPv6 host picks any address of its /64: they are one client.
    for i in range(3):
        assert throttle.attempt(f"v6user{i}", f"ipv6:[2001:db8:1:2::{i + 1}]:443") == (0.0, "")
    assert throttle.attempt("v6user9", "ipv6:[2001:db8:1:2:ffff::9]:443")[1] == "this client"


def test_a_burst_of_zero_switches_a_limit_off() -> None:
    throttle = LoginThrottle(Limit(0, 1.0), Limit(0, 1.0), capacity=1, clock=Clock())
    for _ in range(100):
        assert throttle.attempt("alice", "ipv4:10.0.0.1:1") == (0.0, "")
    assert len(throttle.users) == len(throttle.clients) == 0


def test_the_tables_stay_bounded_and_an_attacked_name_stays_throttled() -> None:
    clock = Clock()
    buckets = Buckets(Limit(burst=2, interval=60.0), capacity=1000, clock=clock)
    buckets.take("victim")
    buckets.take("victim")
    for i in range(100_000):
        buckets.take(f"made-up-{i}-" + "x" * 500)  # long names are cut
        if i % 500 == 0:
            assert buckets.take("victim") > 0  # every guess touches the victim's bucket
        clock.now += 0.0001
    assert len(buckets) == 1000
    assert all(len(key) <= KEY_LENGTH for key in buckets._buckets)
    assert buckets.take("victim") > 0


def test_client_addresses() -> None:
    assert client_address("ipv4:10.1.2.3:5000") == "10.1.2.3"
    assert client_address("ipv6:[2001:db8::1]:5000") == "2001:db8::/64"
    assert client_address("unix:/run/tke/apiserver.sock") == "unix"
    assert client_address("unix:") == "unix"
    assert client_address("") == ""
