"""The identity port shared by every transport: scheme parsing and who names the caller."""

from __future__ import annotations

import pytest

from application.authentication import Credentials, IdentifyCaller
from domain.errors import AuthenticationFailed
from domain.principal import ANONYMOUS, Principal


class TableVerifier:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def verify(self, token: str) -> Principal:
        self.seen.append(token)
        if token != "good":
            raise AuthenticationFailed("bad signature: unknown test token")
        return Principal("alice", ("echo",))


def test_a_bearer_token_is_verified_whatever_the_scheme_case() -> None:
    verifier = TableVerifier()
    identify = IdentifyCaller(verifier)

    assert identify(Credentials(("Bearer good",))) == Principal("alice", ("echo",))
    assert identify(Credentials(("bearer   good  ",))).subject == "alice"
    assert verifier.seen == ["good", "good"]


@pytest.mark.parametrize(
    ("authorization", "expected"),
    [
        ((), "missing credentials"),
        (("Basic dXNlcjpwdw==",), "expected 'Bearer <token>'"),
        (("Bearer ",), "after 'Bearer' is empty"),
        (("Bearer good", "Bearer good"), "more than one"),
        (("Bearer forged",), "bad signature"),
    ],
)
def test_refusals_name_the_problem_and_never_the_token(
    authorization: tuple[str, ...], expected: str
) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        IdentifyCaller(TableVerifier())(Credentials(authorization))
    assert expected in caught.value.message
    assert "forged" not in caught.value.message


def test_with_tokens_on_a_client_certificate_alone_is_not_enough() -> None:
    identify = IdentifyCaller(TableVerifier(), mutual_tls=True)
    assert not identify.needs_peer_subject
    with pytest.raises(AuthenticationFailed, match="missing credentials"):
        identify(Credentials(peer_subject="bob"))


def test_mutual_tls_without_tokens_names_the_caller_by_its_certificate() -> None:
    identify = IdentifyCaller(mutual_tls=True)

    assert identify.enabled and identify.needs_peer_subject
    assert identify(Credentials(peer_subject="bob")) == Principal("bob")
    with pytest.raises(AuthenticationFailed, match="no verified client certificate"):
        identify(Credentials(("Bearer good",)))


def test_with_neither_every_caller_is_anonymous() -> None:
    identify = IdentifyCaller()
    assert not identify.enabled
    assert identify(Credentials(("Bearer whatever",), "bob")) is ANONYMOUS
