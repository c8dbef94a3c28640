"""DNS lists (RFC 5782), domain rating zones and reverse DNS against zones
served by NSD: a listed client is refused naming the list, a
dynamic-address list sends the client to port 587 (OP25B's receiving
side), label lists add a header, a badly rated sender domain is refused
naming its rating, the forward-confirmed PTR name appears in Received and
Authentication-Results, and a client without one can be refused."""

import smtplib

import pytest

from dnsserver import DnsServer
from smtpraw import Raw

ZONES = {
    "test": "",
    # 127.0.0.1, and ::1 as RFC 5782 §2.4's reversed nibbles.
    "bl.test": "1.0.0.127 IN A 127.0.0.2\n" + ".".join(["1"] + ["0"] * 31) + " IN A 127.0.0.2\n",
    "pbl.test": "1.0.0.127 IN A 127.0.0.11\n",
    "rhsbl.test": "spammer.test IN A 127.0.0.2\n",
    # The slides' domain reputation: `DOMAIN.rating.example TXT`.
    "rating.test": (
        'spammer.test IN TXT "Status: Bad"\nspammer.test IN TXT "Rating: 5"\n'
        'good.test IN TXT "Status: Good"\ngood.test IN TXT "Rating: 100"\n'
        'meh.test IN TXT "Status: Neutral"\nmeh.test IN TXT "Rating: 20"\n'
    ),
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


RATING = '[[dnsbl]]\nzone = "rating.test"\nkind = "rating"\nname = "Example Rating"\nmin_rating = 50\n'


def test_badly_rated_sender_domain_is_refused_with_its_rating(make_server, dns_server):
    s = server_with(make_server, dns_server, RATING)
    c = Raw(s.mx)
    c.cmd("EHLO client.test")
    code, text = c.cmd("MAIL FROM:<x@spammer.test>")
    assert code == 554 and "5.7.1" in text and "spammer.test is rated 5 (Bad) by Example Rating" in text
    code, text = c.cmd("MAIL FROM:<x@meh.test>")
    assert code == 554 and "rated 20 (Neutral)" in text
    assert c.cmd("MAIL FROM:<x@good.test>")[0] == 250


def test_unrated_domains_pass_a_rating_zone(make_server, dns_server):
    s = server_with(make_server, dns_server, RATING)
    c = Raw(s.mx)
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<x@unrated.test>")[0] == 250


def test_rating_label_lists_add_a_header(make_server, dns_server):
    s = server_with(make_server, dns_server, RATING.replace("min_rating = 50\n", 'action = "label"\n'))
    with smtplib.SMTP("127.0.0.1", s.mx) as c:
        c.sendmail("a@spammer.test", ["r@local.test"], "Subject: x\r\n\r\nhi\r\n")
        c.sendmail("a@meh.test", ["m@local.test"], "Subject: x\r\n\r\nhi\r\n")
    [bad] = s.wait_messages("r", 1)
    [meh] = s.wait_messages("m", 1)
    assert b"X-DNSBL: Example Rating rates spammer.test 5 (Bad)" in bad
    # Without min_rating only a Bad status counts.
    assert b"X-DNSBL" not in meh


def test_reverse_dns_result_is_in_authentication_results(make_server, dns_server):
    s = server_with(make_server, dns_server, "")
    with smtplib.SMTP("127.0.0.1", s.mx) as c:
        c.sendmail("a@good.test", ["i@local.test"], "Subject: x\r\n\r\nhi\r\n")
    [msg] = s.wait_messages("i", 1)
    assert b"iprev=pass policy.iprev=127.0.0.1" in msg


def test_clients_without_confirmed_reverse_dns_can_be_refused(make_server, dns_server):
    s = server_with(make_server, dns_server, "[reverse_dns]\nrequire_confirmed = true\n")
    with pytest.raises(smtplib.SMTPConnectError) as e:
        smtplib.SMTP("127.0.0.1", s.mx, source_address=("127.0.0.2", 0))
    assert e.value.smtp_code == 550 and b"5.7.25" in e.value.smtp_error
    with smtplib.SMTP("127.0.0.1", s.mx) as c:
        c.sendmail("a@good.test", ["k@local.test"], "Subject: x\r\n\r\nhi\r\n")
    s.wait_messages("k", 1)


def test_ipv6_client_is_looked_up_by_reversed_nibbles(make_server, dns_server):
    from conftest import free_port

    port = free_port()
    extra = f'[[listener]]\nrole = "mx"\nbind = ["[::1]:{port}"]\n\n[[dnsbl]]\nzone = "bl.test"\nname = "Example BL"\n'
    server_with(make_server, dns_server, extra)
    code, text = Raw(port, host="::1").greeting
    assert code == 554 and "[::1] is listed by Example BL" in text


def test_labels_about_an_abandoned_sender_do_not_reach_the_next_message(make_server, dns_server):
    s = server_with(make_server, dns_server, RATING.replace("min_rating = 50\n", 'action = "label"\n'))
    c = Raw(s.mx)
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<x@spammer.test>")[0] == 250
    assert c.cmd("RSET")[0] == 250
    assert c.cmd("MAIL FROM:<x@good.test>")[0] == 250
    assert c.cmd("RCPT TO:<abandoned@local.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    assert c.cmd("Subject: x\r\n\r\nhi\r\n.")[0] == 250
    [msg] = s.wait_messages("abandoned", 1)
    assert b"X-DNSBL" not in msg
