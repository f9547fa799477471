"""Edits to moto's EC2 XML responses: merge delegated prefixes (IPv4 and IPv6) and the subnet free-address
count."""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence

EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"


def _ns(root: ET.Element) -> str:
    return root.tag[1 : root.tag.index("}")] if root.tag.startswith("{") else ""


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}" if ns else name


def _edit(body: bytes, fn: Callable[[ET.Element, str], None]) -> bytes:
    root = ET.fromstring(body)
    ns = _ns(root)
    ET.register_namespace("", ns)
    fn(root, ns)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def enrich_enis(
    body: bytes,
    prefixes_of: Callable[[str], list[ipaddress.IPv4Network]],
    slot_of: Callable[[str], tuple[int, int] | None],
    type_of: Callable[[str], str] = lambda _: "interface",
    ipv6_prefixes_of: Callable[[str], list[ipaddress.IPv6Network]] = lambda eni_id: [],
) -> bytes:
    """Every ENI-shaped element (has networkInterfaceId and privateIpAddressesSet) gets its ipv4PrefixSet,
    ipv6PrefixSet and interfaceType, and its attachment the network card and device index it is on."""

    def fn(root: ET.Element, ns: str) -> None:
        for elem in root.iter():
            eni_id = elem.find(_q(ns, "networkInterfaceId"))
            if eni_id is None or elem.find(_q(ns, "privateIpAddressesSet")) is None or eni_id.text is None:
                continue
            for set_name, field_name, prefixes in (
                ("ipv4PrefixSet", "ipv4Prefix", prefixes_of(eni_id.text)),
                ("ipv6PrefixSet", "ipv6Prefix", ipv6_prefixes_of(eni_id.text)),
            ):
                for old in elem.findall(_q(ns, set_name)):
                    elem.remove(old)
                prefix_set = ET.SubElement(elem, _q(ns, set_name))
                for prefix in prefixes:
                    item = ET.SubElement(prefix_set, _q(ns, "item"))
                    ET.SubElement(item, _q(ns, field_name)).text = str(prefix)
            kind = elem.find(_q(ns, "interfaceType"))
            if kind is None:
                kind = ET.SubElement(elem, _q(ns, "interfaceType"))
            kind.text = type_of(eni_id.text)
            slot = slot_of(eni_id.text)
            attachment = elem.find(_q(ns, "attachment"))
            if slot is None or attachment is None:
                continue
            for name, value in (("networkCardIndex", slot[0]), ("deviceIndex", slot[1])):
                field = attachment.find(_q(ns, name))
                if field is None:
                    field = ET.SubElement(attachment, _q(ns, name))
                field.text = str(value)

    return _edit(body, fn)


def set_available_counts(body: bytes, counts: Mapping[str, int]) -> bytes:
    def fn(root: ET.Element, ns: str) -> None:
        for elem in root.iter():
            sid = elem.find(_q(ns, "subnetId"))
            count = elem.find(_q(ns, "availableIpAddressCount"))
            if sid is not None and count is not None and sid.text is not None and sid.text in counts:
                count.text = str(counts[sid.text])

    return _edit(body, fn)


def set_text(body: bytes, name: str, value: str) -> bytes:
    """Set every `name` element's text (e.g. the networkCardIndex of AttachNetworkInterface)."""

    def fn(root: ET.Element, ns: str) -> None:
        for elem in root.iter(_q(ns, name)):
            elem.text = value

    return _edit(body, fn)


def find_texts(body: bytes, name: str) -> list[str]:
    root = ET.fromstring(body)
    return [e.text or "" for e in root.iter(_q(_ns(root), name))]


Value = (
    str | Mapping[str, "Value"] | Sequence[tuple[str, str]] | Sequence[Mapping[str, "Value"]] | Sequence[str]
)


def render(action: str, fields: list[tuple[str, Value]]) -> bytes:
    """A minimal EC2 query-protocol response: scalar fields, structures (mappings), and item sets (of
    one-field items given as pairs, of plain strings, or of structures)."""
    root = ET.Element(f"{action}Response", xmlns=EC2_NS)
    ET.SubElement(root, "requestId").text = "vpccni-testbed"
    for name, value in fields:
        _fill(ET.SubElement(root, name), value)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _fill(elem: ET.Element, value: Value) -> None:
    if isinstance(value, str):
        elem.text = value
    elif isinstance(value, Mapping):
        for name, child in value.items():
            _fill(ET.SubElement(elem, name), child)
    else:
        for entry in value:
            item = ET.SubElement(elem, "item")
            if isinstance(entry, str):
                item.text = entry
            elif isinstance(entry, tuple):
                ET.SubElement(item, entry[0]).text = entry[1]
            else:
                _fill(item, entry)
