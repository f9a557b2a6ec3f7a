"""JwtVerifier: what it accepts, what it rejects and why, and its cache."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from adapters.auth import (
    ClaimRules,
    JwtVerifier,
    KeyProblem,
    SigningKey,
    VerificationKey,
    issue_token,
)
from domain.errors import AuthenticationFailed
from domain.principal import Principal
from tests.support.tokens import (
    OTHER_SECRET,
    SECRET,
    claims,
    key_pair,
    raw_token,
    sign,
    tampered,
)

RSA = key_pair("RS256")


def verifier(*keys: VerificationKey, **rules: Any) -> JwtVerifier:
    return JwtVerifier(keys or (VerificationKey.shared_secret(SECRET),), ClaimRules(**rules))


def rejection(v: JwtVerifier, token: str) -> str:
    with pytest.raises(AuthenticationFailed) as caught:
        v.verify(token)
    message = caught.value.message
    # Whatever is wrong, the token itself never appears in what the caller (and the log) sees.
    assert token not in message
    assert caught.value.code == "UNAUTHENTICATED"
    return message


def test_a_valid_token_becomes_a_principal() -> None:
    token = sign(claims("alice", models=["echo", "gpt-*"], jti="t-1"))

    assert verifier().verify(token) == Principal("alice", ("echo", "gpt-*"), "t-1")


def test_no_models_claim_means_every_model() -> None:
    assert verifier().verify(sign(claims("bob"))).allowed_models is None


def test_the_team_claim_names_the_callers_team() -> None:
    assert verifier().verify(sign(claims("bob", team="research"))).team == "research"
    assert verifier().verify(sign(claims("bob"))).team is None


@pytest.mark.parametrize("team", ["", 7, ["a"]])
def test_a_malformed_team_claim_is_refused_not_ignored(team: object) -> None:
    assert "team claim" in rejection(verifier(), sign(claims("bob", team=team)))


def test_issued_tokens_carry_the_team() -> None:
    key = SigningKey.shared_secret(SECRET)
    token = issue_token(key, subject="bob", expires_in_s=60, team="research")
    assert verifier().verify(token).team == "research"


def test_an_empty_models_claim_means_no_model() -> None:
    assert verifier().verify(sign(claims("bob", models=[]))).allowed_models == ()


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("not-a-jwt", "malformed token"),
        ("a.b.c", "malformed token"),
        ("é.é.é", "malformed token"),
        (raw_token({"alg": "none"}, claims(), None), "algorithm 'none' is not accepted"),
        (raw_token({"alg": "HS256"}, claims(), RSA.public_pem.encode()), "bad signature"),
        (tampered(sign(claims("alice")), sub="admin"), "bad signature"),
        (sign(claims(), OTHER_SECRET), "bad signature"),
        (sign(claims(lifetime_s=-3600)), "expired"),
        (sign(claims(nbf=int(time.time()) + 3600)), "not valid yet (nbf)"),
        (sign(claims(iat=int(time.time()) + 3600)), "issued in the future (iat)"),
        (sign({"sub": "alice", "iat": int(time.time())}), "no 'exp' claim"),
        (sign({"exp": int(time.time()) + 60}), "no 'sub' claim"),
        (sign(claims(aud="other-service")), "audience"),
        (sign(claims(), kid="nope"), "unknown key id (kid) 'nope'"),
        (sign(claims(models="echo")), "models claim must be a list"),
        (sign(claims(models=["echo", 3])), "models claim must be a list"),
        (sign(claims(sub="")), "sub claim must be a non-empty string"),
        (sign(claims(), SECRET, "HS512"), "algorithm 'HS512' is not accepted"),
        (sign(claims(iat="yesterday")), "iat claim must be a number"),
    ],
)
def test_bad_tokens_are_rejected_with_a_reason(token: str, expected: str) -> None:
    assert expected in rejection(verifier(), token)


def test_algorithm_confusion_with_the_rsa_public_key_as_hmac_secret() -> None:
    """The classic attack: a server holding an RSA public key is sent an HS256 token whose
    HMAC key is that (public) PEM. The key is pinned to RS256, so HS256 is never tried."""
    v = verifier(VerificationKey.public_key(RSA.public_pem, "RS256", "rsa"))
    forged = raw_token({"alg": "HS256", "kid": "rsa"}, claims(), RSA.public_pem.encode())
    no_kid = raw_token({"alg": "HS256"}, claims(), RSA.public_pem.encode())

    assert "'HS256' is not accepted" in rejection(v, no_kid)
    assert "'HS256' is not accepted" in rejection(v, forged)


def test_a_key_id_pins_the_algorithm_too() -> None:
    v = verifier(
        VerificationKey.shared_secret(SECRET, "HS256", "hs"),
        VerificationKey.public_key(RSA.public_pem, "RS256", "rsa"),
    )
    forged = raw_token({"alg": "HS256", "kid": "rsa"}, claims(), RSA.public_pem.encode())

    assert "key 'rsa' is for RS256" in rejection(v, forged)


def test_over_long_tokens_are_refused_before_decoding() -> None:
    token = sign(claims(padding="x" * 5000))

    assert "at most 4096" in rejection(verifier(), token)
    assert verifier(max_token_bytes=8192).verify(token).subject == "alice"


def test_issuer_and_audience_are_checked_when_configured() -> None:
    v = verifier(issuer="https://issuer.example", audience=("llm-proxy", "proxy-b"))
    good = claims(iss="https://issuer.example", aud="proxy-b")

    assert v.verify(sign(good)).subject == "alice"
    assert "wrong issuer" in rejection(v, sign({**good, "iss": "https://evil.example"}))
    assert "wrong audience" in rejection(v, sign({**good, "aud": "another"}))
    assert "no 'iss' claim" in rejection(v, sign(claims(aud="proxy-b")))
    assert "no 'aud' claim" in rejection(v, sign(claims(iss="https://issuer.example")))


def test_leeway_forgives_small_clock_skew_only() -> None:
    now = int(time.time())
    just_expired = sign(claims(exp=now - 10))

    assert verifier(leeway_s=30).verify(just_expired).subject == "alice"
    assert "expired" in rejection(verifier(leeway_s=0), just_expired)


@pytest.mark.parametrize("algorithm", ["RS256", "PS256", "ES256", "ES384", "EdDSA"])
def test_each_asymmetric_algorithm_verifies_with_its_public_key(algorithm: str) -> None:
    pair = key_pair(algorithm)
    v = verifier(VerificationKey.public_key(pair.public_pem, algorithm, "k"))

    assert v.verify(sign(claims(), pair.private, algorithm, kid="k")).subject == "alice"
    # A key of the right type but another pair: the signature does not verify.
    stranger = key_pair(algorithm)
    assert "bad signature" in rejection(v, sign(claims(), stranger.private, algorithm, kid="k"))


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
def test_each_hmac_algorithm(algorithm: str) -> None:
    v = verifier(VerificationKey.shared_secret(SECRET, algorithm))

    assert v.verify(sign(claims(), SECRET, algorithm)).subject == "alice"


def test_rotation_overlap_accepts_both_keys_with_or_without_kid() -> None:
    old = VerificationKey.shared_secret(SECRET, key_id="2024")
    new = VerificationKey.shared_secret(OTHER_SECRET, key_id="2025")
    both = verifier(old, new)
    only_new = verifier(new)

    for token in (sign(claims(), SECRET, kid="2024"), sign(claims(), SECRET)):
        assert both.verify(token).subject == "alice"
    assert both.verify(sign(claims(), OTHER_SECRET, kid="2025")).subject == "alice"
    assert both.verify(sign(claims(), OTHER_SECRET)).subject == "alice"
    assert "rotated out" in rejection(only_new, sign(claims(), SECRET, kid="2024"))
    assert "bad signature" in rejection(only_new, sign(claims(), SECRET))


def test_keys_refuse_weak_or_mismatched_material() -> None:
    with pytest.raises(KeyProblem, match="at least 32"):
        VerificationKey.shared_secret("short")
    with pytest.raises(KeyProblem, match="not a key for ES256"):
        VerificationKey.public_key(RSA.public_pem, "ES256")
    with pytest.raises(KeyProblem, match="curve"):
        VerificationKey.public_key(key_pair("ES384").public_pem, "ES256")
    with pytest.raises(KeyProblem, match="shared secret"):
        VerificationKey.public_key(RSA.public_pem, "HS256")
    with pytest.raises(KeyProblem, match="not supported"):
        VerificationKey.shared_secret(SECRET, "none")
    with pytest.raises(KeyProblem, match="PEM"):
        VerificationKey.public_key("-----BEGIN NONSENSE-----", "RS256")
    small = key_pair("RS256")
    assert small.private.key_size == 2048


def test_issued_tokens_round_trip() -> None:
    key = SigningKey.shared_secret(SECRET, key_id="k1")
    token = issue_token(
        key, subject="svc", expires_in_s=60, models=["echo"], audience=["a"], issuer="me"
    )
    v = verifier(VerificationKey.shared_secret(SECRET, key_id="k1"), issuer="me", audience=("a",))

    principal = v.verify(token)

    assert principal.subject == "svc"
    assert principal.allowed_models == ("echo",)
    assert principal.token_id
    assert jwt.get_unverified_header(token)["kid"] == "k1"


def test_asymmetric_issue_round_trips() -> None:
    pair = key_pair("EdDSA")
    token = issue_token(
        SigningKey.private_key(pair.private_pem, "EdDSA"), subject="s", expires_in_s=60
    )

    assert (
        verifier(VerificationKey.public_key(pair.public_pem, "EdDSA")).verify(token).subject == "s"
    )


# --------------------------------------------------------------------------- cache


class CountingVerifier(JwtVerifier):
    decodes = 0

    def _decode(self, token: str) -> tuple[Principal, float]:
        self.decodes += 1
        return super()._decode(token)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def counting(clock: Clock, **options: Any) -> CountingVerifier:
    return CountingVerifier((VerificationKey.shared_secret(SECRET),), clock=clock, **options)


def test_a_token_seen_before_is_not_decoded_again() -> None:
    clock = Clock()
    v = counting(clock)
    token = sign(claims())

    for _ in range(5):
        v.verify(token)

    assert v.decodes == 1


@pytest.mark.parametrize(
    ("ttl_s", "lifetime_s"),
    [pytest.param(3600, 5, id="exp-first"), pytest.param(10, 3600, id="ttl-first")],
)
def test_a_cache_entry_lives_until_the_tokens_exp_or_the_ttl_whichever_is_first(
    ttl_s: float, lifetime_s: float
) -> None:
    clock = Clock()
    v = counting(clock, cache_ttl_s=ttl_s)
    token = sign(claims(lifetime_s=lifetime_s))
    v.verify(token)
    first_limit = min(ttl_s, lifetime_s)

    clock.now += first_limit - 2
    v.verify(token)
    assert v.decodes == 1

    clock.now += 3
    # Past exp the cache no longer answers; PyJWT's own clock still sees the token as valid
    # here (only the fake clock moved), which proves the cache entry was dropped for exp.
    v.verify(token)
    assert v.decodes == 2


def test_cache_is_bounded() -> None:
    clock = Clock()
    v = counting(clock, cache_size=3)
    tokens = [sign(claims(f"user-{i}")) for i in range(5)]
    for token in tokens:
        v.verify(token)

    v.verify(tokens[0])  # evicted, decoded again
    v.verify(tokens[4])  # still cached

    assert v.decodes == 6
    assert len(v._cache) <= 3


def test_rejected_tokens_are_not_cached() -> None:
    clock = Clock()
    v = counting(clock)
    token = sign(claims(), OTHER_SECRET)
    for _ in range(2):
        with pytest.raises(AuthenticationFailed):
            v.verify(token)

    assert v.decodes == 2
