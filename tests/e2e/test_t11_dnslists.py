"""DNS lists (RFC 5782) and reverse DNS against zones served by NSD: a
listed client is refused naming the list, a dynamic-address list sends the
client to port 587 (OP25B's receiving side), label lists add a header, and
the forward-confirmed PTR name appears in Received."""

import smtplib

import pytest

from dnsserver import DnsServer
from smtpraw import Raw

ZONES = {
    "test": "",
    "bl.test": "1.0.0.127 IN A 127.0.0.2\n",
    "pbl.test": "1.0.0.127 IN A 127.0.0.11\n",
    "rhsbl.test": "spammer.test IN A 127.0.0.2\n",
    "good.test": "mx-client IN A 127.0.0.2\n",
    "127.in-addr.arpa": "2.0.0 IN PTR mx-client.good.test.\n",
}


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory):
    d = DnsServer(tmp_path_factory.mktemp("lists-dns"), ZONES).start()
    yield d
    d.stop()


def server_with(make_server, dns_server, lists: str):
    return make_server(lists, dns=f"127.0.0.1:{dns_server.port}")


def test_listed_client_is_refused_naming_the_list(make_server, dns_server):
    s = server_with(make_server, dns_server, '[[dnsbl]]\nzone = "bl.test"\nname = "Example BL"\n')
    c = Raw(s.mx, greet=False)
    code, text = c.reply()
    assert code == 554 and "5.7.1" in text and "Example BL" in text and "[127.0.0.1]" in text


def test_dynamic_address_list_points_to_the_submission_port(make_server, dns_server):
    s = server_with(make_server, dns_server, '[[dnsbl]]\nzone = "pbl.test"\nname = "Example PBL"\ndynamic = true\n')
    code, text = Raw(s.mx, greet=False).reply()
    assert code == 554 and "dynamic address" in text and "587" in text and "Example PBL" in text


def test_submission_port_is_not_subject_to_address_lists(make_server, dns_server):
    s = server_with(make_server, dns_server, '[[dnsbl]]\nzone = "pbl.test"\ndynamic = true\n')
    assert Raw(s.sub).greeting[0] == 220


def test_label_list_adds_a_header_and_accepts(make_server, dns_server):
    s = server_with(make_server, dns_server, '[[dnsbl]]\nzone = "bl.test"\nname = "Example BL"\naction = "label"\n')
    with smtplib.SMTP("127.0.0.1", s.mx) as c:
        c.sendmail("a@good.test", ["u@local.test"], "Subject: x\r\n\r\nhi\r\n")
    [msg] = s.wait_messages("u", 1)
    assert b"X-DNSBL: Example BL listed [127.0.0.1]" in msg


def test_sender_domain_list_refuses_at_mail(make_server, dns_server):
    s = server_with(make_server, dns_server, '[[dnsbl]]\nzone = "rhsbl.test"\nkind = "domain"\nname = "Example RHSBL"\n')
    c = Raw(s.mx)
    c.cmd("EHLO client.test")
    code, text = c.cmd("MAIL FROM:<x@spammer.test>")
    assert code == 554 and "spammer.test" in text and "Example RHSBL" in text
    assert c.cmd("MAIL FROM:<x@good.test>")[0] == 250


def test_forward_confirmed_reverse_name_is_in_received(make_server, dns_server):
    # The resolver answers loopback reverse names itself (RFC 6761 §6.3:
    # 127.0.0.1 is "localhost", and localhost is 127.0.0.1), so on loopback
    # the confirmed name is "localhost"; for 127.0.0.2 no name confirms
    # (its reverse name does not resolve back to it), so none is shown.
    s = server_with(make_server, dns_server, "")
    with smtplib.SMTP("127.0.0.1", s.mx) as c:
        c.sendmail("a@good.test", ["v@local.test"], "Subject: x\r\n\r\nhi\r\n")
    with smtplib.SMTP("127.0.0.1", s.mx, source_address=("127.0.0.2", 0)) as c:
        c.sendmail("a@good.test", ["w@local.test"], "Subject: x\r\n\r\nhi\r\n")
    [confirmed] = s.wait_messages("v", 1)
    [unconfirmed] = s.wait_messages("w", 1)
    assert b"(localhost [127.0.0.1])" in confirmed
    assert b"Received: from [127.0.0.1] ([127.0.0.2])" in unconfirmed
