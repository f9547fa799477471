from __future__ import annotations

from ipaddress import IPv4Network

from vpccni.testbed.ec2 import xmlpatch
from vpccni.testbed.ec2.query import indexed

NS = xmlpatch.EC2_NS
DESCRIBE = f"""<?xml version="1.0" encoding="UTF-8"?>
<DescribeNetworkInterfacesResponse xmlns="{NS}"><networkInterfaceSet>
<item><networkInterfaceId>eni-1</networkInterfaceId><privateIpAddressesSet/>
<attachment><deviceIndex>100</deviceIndex><networkCardIndex>0</networkCardIndex></attachment></item>
<item><networkInterfaceId>eni-2</networkInterfaceId><privateIpAddressesSet/></item>
</networkInterfaceSet></DescribeNetworkInterfacesResponse>""".encode()


def test_enis_get_their_prefixes_and_attachment_slot() -> None:
    prefixes = {"eni-1": [IPv4Network("10.0.0.16/28")]}
    slots = {"eni-1": (1, 0)}
    body = xmlpatch.enrich_enis(DESCRIBE, lambda e: prefixes.get(e, []), slots.get)
    assert xmlpatch.find_texts(body, "ipv4Prefix") == ["10.0.0.16/28"]
    assert xmlpatch.find_texts(body, "networkCardIndex") == ["1"]
    assert xmlpatch.find_texts(body, "deviceIndex") == ["0"]
    assert body.count(b"ipv4PrefixSet") == 3  # eni-2 gets an empty set: <ipv4PrefixSet />


def test_subnet_counts_and_rendered_responses() -> None:
    body = f'<R xmlns="{NS}"><subnetSet><item><subnetId>subnet-1</subnetId>'
    body += "<availableIpAddressCount>251</availableIpAddressCount></item></subnetSet></R>"
    patched = xmlpatch.set_available_counts(body.encode(), {"subnet-1": 7})
    assert xmlpatch.find_texts(patched, "availableIpAddressCount") == ["7"]
    rendered = xmlpatch.render("UnassignPrivateIpAddresses", [("return", "true")])
    assert xmlpatch.find_texts(rendered, "return") == ["true"]


def test_indexed_query_parameters_in_order() -> None:
    params = {"Ipv4Prefix.2.Ipv4Prefix": "b", "Ipv4Prefix.1.Ipv4Prefix": "a", "PrivateIpAddress.10": "z"}
    assert indexed(params, "Ipv4Prefix", "Ipv4Prefix") == ["a", "b"]
    assert indexed(params, "PrivateIpAddress") == ["z"]
    assert indexed(params, "Ipv4Prefix") == []
