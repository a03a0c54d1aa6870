"""DKIM canonicalization and the spliced body hash, held to dkimpy's canonicalization and to hashing whole."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
import dkim
from dkim.canonicalization import Relaxed, Simple
from hypothesis import event, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from newsletter.dkim import DkimSigner, SigningKey
from newsletter.dkim_canon import Canonicalization, SignedHeaders, SplicedBody, split_message

CANONICALIZATIONS = ("relaxed/simple", "relaxed/relaxed", "simple/simple", "simple/relaxed")
SIGNER_KEY = SigningKey(b"s1", Ed25519PrivateKey.from_private_bytes(bytes(range(32))))

# lines of text with what canonicalization changes: runs of spaces and tabs, spaces at the ends
line = st.text(st.sampled_from(list(" \t.aZ=:")), max_size=12).map(lambda text: text.encode("ascii"))
lines = st.lists(line, max_size=6)
body = st.builds(lambda parts, end: b"\r\n".join(parts) + end, lines, st.sampled_from([b"", b"\r\n", b"\r\n\r\n"]))


@given(text=body, canonicalization=st.sampled_from(CANONICALIZATIONS))
def test_a_body_is_canonicalized_as_dkimpy_does(text, canonicalization):
    canon = Canonicalization(canonicalization)
    theirs = (Relaxed if canon.relaxed_body else Simple).canonicalize_body(text)

    assert canon.body(text) == theirs


@given(name=st.sampled_from([b"Subject", b"LIST-Unsubscribe", b"To "]), value=st.lists(line, min_size=1, max_size=3),
       canonicalization=st.sampled_from(CANONICALIZATIONS))
def test_a_header_is_canonicalized_as_dkimpy_does(name, value, canonicalization):
    canon = Canonicalization(canonicalization)
    folded = b"\r\n ".join(value)
    algorithm = Relaxed if canon.relaxed_header else Simple
    [(their_name, their_value)] = algorithm.canonicalize_headers([(name, folded + b"\r\n")])

    assert canon.header(name + b":" + folded) == their_name + b":" + their_value


# header fields with what relaxed canonicalization changes (case, runs of spaces, folds), some names twice
fields = st.lists(st.tuples(st.sampled_from([b"From", b"to", b"TO", b"Subject", b"List-Unsubscribe", b"X-Other"]),
                            st.lists(line, min_size=1, max_size=3)), min_size=1, max_size=8)
signed_names = st.lists(st.sampled_from([b"from", b"to", b"subject", b"list-unsubscribe", b"reply-to"]),
                        min_size=1, max_size=6)


@hsettings(max_examples=200)
@given(head_fields=fields, names=signed_names, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
       canonicalization=st.sampled_from(CANONICALIZATIONS))
def test_the_signed_header_data_is_dkimpys_whatever_fields_were_canonicalized_ahead(head_fields, names, cuts,
                                                                                      canonicalization):
    """Static fields canonicalized once per template (any pieces of the head, whole fields or not) change nothing."""
    canon = Canonicalization(canonicalization)
    head = b"".join(name + b":" + b"\r\n ".join(value) + b"\r\n" for name, value in head_fields)
    bounds = sorted({0, len(head), *(min(cut, len(head)) for cut in cuts)})
    known = [head[start:end] for start, end in zip(bounds, bounds[1:])]  # what a template's segments could be
    parsed, _ = dkim.rfc822_parse(head + b"\r\n")
    algorithm = Relaxed if canon.relaxed_header else Simple
    theirs = b"".join(name + b":" + value for name, value in
                      algorithm.canonicalize_headers(dkim.select_headers(parsed, names)))

    assert SignedHeaders(canon, names, known).data(head) == theirs
    assert SignedHeaders(canon, names).data(head) == theirs


def whole_signature(signer: DkimSigner, raw: bytes) -> bytes:
    head, text = split_message(raw)
    return signer.signature(head, hashlib.sha256(signer.canon.body(text)).digest(), 1_796_000_000)


# a message cut into static segments with personal values between them: header lines, body lines,
# and (to reach the fallback) values that do not end a line
header_lines = st.lists(st.sampled_from([b"From: a@example.org\r\n", b"To:  b@example.net \r\n", b"Subject: x\r\n y\r\n",
                                         b"X-Other: 1\r\n"]), max_size=3).map(b"".join)
body_values = st.one_of(lines.map(lambda parts: b"".join(p + b"\r\n" for p in parts)), line)


@hsettings(max_examples=150, deadline=None)
@given(head=st.lists(header_lines, min_size=1, max_size=3), body_parts=st.lists(body, min_size=1, max_size=4),
       values=st.lists(body_values, min_size=3, max_size=3), canonicalization=st.sampled_from(CANONICALIZATIONS))
def test_the_spliced_body_hash_signs_what_hashing_the_whole_message_signs(head, body_parts, values, canonicalization):
    signer = DkimSigner("example.org", [SIGNER_KEY], canonicalization, clock=lambda: 1_796_000_000)
    header_values = [b"To: c@example.net\r\n"] * (len(head) - 1)
    # the headers end inside the last header segment; each body part after it follows a value
    segments = head[:-1] + [head[-1] + b"From: a@example.org\r\n\r\n" + body_parts[0]] + body_parts[1:]
    slot_values = header_values + values[: len(body_parts) - 1]
    message = segments[0] + b"".join(v + s for v, s in zip(slot_values, segments[1:]))
    prepared = signer.prepare(segments)
    event("spliced" if prepared else "hashed whole")

    assert prepared is not None or SplicedBody.make(signer.canon, segments) is None
    spliced = prepared.signature(slot_values) if prepared else whole_signature(signer, message)
    assert spliced == whole_signature(signer, message)


def test_a_value_that_does_not_end_a_line_is_hashed_whole_and_signs_the_same():
    signer = DkimSigner("example.org", [SIGNER_KEY], "relaxed/relaxed", clock=lambda: 1_796_000_000)
    segments = [b"From: a@example.org\r\n\r\nHello\r\n", b"  x  \r\nend\r\n\r\n"]
    prepared = signer.prepare(segments)

    assert prepared is not None
    for value in (b"Ada \t \r\n", b"Ada \t "):  # the second joins the next segment's first line
        assert prepared.signature([value]) == whole_signature(signer, segments[0] + value + segments[1])


def test_a_template_whose_body_ends_in_a_value_is_signed_whole():
    canon = Canonicalization("simple/simple")

    assert SplicedBody.make(canon, [b"From: a@example.org\r\n\r\nHello\r\n", b"\r\n"]) is None
