from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AddNetworkRequest(_message.Message):
    __slots__ = ("ClientVersion", "K8S_POD_NAME", "K8S_POD_NAMESPACE", "K8S_POD_INFRA_CONTAINER_ID", "ContainerID", "IfName", "NetworkName", "Netns", "RequiresMultiNICAttachment")
    CLIENTVERSION_FIELD_NUMBER: _ClassVar[int]
    K8S_POD_NAME_FIELD_NUMBER: _ClassVar[int]
    K8S_POD_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    K8S_POD_INFRA_CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTAINERID_FIELD_NUMBER: _ClassVar[int]
    IFNAME_FIELD_NUMBER: _ClassVar[int]
    NETWORKNAME_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    REQUIRESMULTINICATTACHMENT_FIELD_NUMBER: _ClassVar[int]
    ClientVersion: str
    K8S_POD_NAME: str
    K8S_POD_NAMESPACE: str
    K8S_POD_INFRA_CONTAINER_ID: str
    ContainerID: str
    IfName: str
    NetworkName: str
    Netns: str
    RequiresMultiNICAttachment: bool
    def __init__(self, ClientVersion: _Optional[str] = ..., K8S_POD_NAME: _Optional[str] = ..., K8S_POD_NAMESPACE: _Optional[str] = ..., K8S_POD_INFRA_CONTAINER_ID: _Optional[str] = ..., ContainerID: _Optional[str] = ..., IfName: _Optional[str] = ..., NetworkName: _Optional[str] = ..., Netns: _Optional[str] = ..., RequiresMultiNICAttachment: _Optional[bool] = ...) -> None: ...

class IPAllocationMetadata(_message.Message):
    __slots__ = ("IPv4Addr", "IPv6Addr", "DeviceNumber", "RouteTableId")
    IPV4ADDR_FIELD_NUMBER: _ClassVar[int]
    IPV6ADDR_FIELD_NUMBER: _ClassVar[int]
    DEVICENUMBER_FIELD_NUMBER: _ClassVar[int]
    ROUTETABLEID_FIELD_NUMBER: _ClassVar[int]
    IPv4Addr: str
    IPv6Addr: str
    DeviceNumber: int
    RouteTableId: int
    def __init__(self, IPv4Addr: _Optional[str] = ..., IPv6Addr: _Optional[str] = ..., DeviceNumber: _Optional[int] = ..., RouteTableId: _Optional[int] = ...) -> None: ...

class AddNetworkReply(_message.Message):
    __slots__ = ("Success", "IPAllocationMetadata", "UseExternalSNAT", "VPCv4CIDRs", "VPCv6CIDRs", "PodVlanId", "PodENIMAC", "PodENISubnetGW", "ParentIfIndex", "NetworkPolicyMode")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    IPALLOCATIONMETADATA_FIELD_NUMBER: _ClassVar[int]
    USEEXTERNALSNAT_FIELD_NUMBER: _ClassVar[int]
    VPCV4CIDRS_FIELD_NUMBER: _ClassVar[int]
    VPCV6CIDRS_FIELD_NUMBER: _ClassVar[int]
    PODVLANID_FIELD_NUMBER: _ClassVar[int]
    PODENIMAC_FIELD_NUMBER: _ClassVar[int]
    PODENISUBNETGW_FIELD_NUMBER: _ClassVar[int]
    PARENTIFINDEX_FIELD_NUMBER: _ClassVar[int]
    NETWORKPOLICYMODE_FIELD_NUMBER: _ClassVar[int]
    Success: bool
    IPAllocationMetadata: _containers.RepeatedCompositeFieldContainer[IPAllocationMetadata]
    UseExternalSNAT: bool
    VPCv4CIDRs: _containers.RepeatedScalarFieldContainer[str]
    VPCv6CIDRs: _containers.RepeatedScalarFieldContainer[str]
    PodVlanId: int
    PodENIMAC: str
    PodENISubnetGW: str
    ParentIfIndex: int
    NetworkPolicyMode: str
    def __init__(self, Success: _Optional[bool] = ..., IPAllocationMetadata: _Optional[_Iterable[_Union[IPAllocationMetadata, _Mapping]]] = ..., UseExternalSNAT: _Optional[bool] = ..., VPCv4CIDRs: _Optional[_Iterable[str]] = ..., VPCv6CIDRs: _Optional[_Iterable[str]] = ..., PodVlanId: _Optional[int] = ..., PodENIMAC: _Optional[str] = ..., PodENISubnetGW: _Optional[str] = ..., ParentIfIndex: _Optional[int] = ..., NetworkPolicyMode: _Optional[str] = ...) -> None: ...

class DelNetworkRequest(_message.Message):
    __slots__ = ("ClientVersion", "K8S_POD_NAME", "K8S_POD_NAMESPACE", "K8S_POD_INFRA_CONTAINER_ID", "Reason", "ContainerID", "IfName", "NetworkName", "K8S_POD_UID")
    CLIENTVERSION_FIELD_NUMBER: _ClassVar[int]
    K8S_POD_NAME_FIELD_NUMBER: _ClassVar[int]
    K8S_POD_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    K8S_POD_INFRA_CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CONTAINERID_FIELD_NUMBER: _ClassVar[int]
    IFNAME_FIELD_NUMBER: _ClassVar[int]
    NETWORKNAME_FIELD_NUMBER: _ClassVar[int]
    K8S_POD_UID_FIELD_NUMBER: _ClassVar[int]
    ClientVersion: str
    K8S_POD_NAME: str
    K8S_POD_NAMESPACE: str
    K8S_POD_INFRA_CONTAINER_ID: str
    Reason: str
    ContainerID: str
    IfName: str
    NetworkName: str
    K8S_POD_UID: str
    def __init__(self, ClientVersion: _Optional[str] = ..., K8S_POD_NAME: _Optional[str] = ..., K8S_POD_NAMESPACE: _Optional[str] = ..., K8S_POD_INFRA_CONTAINER_ID: _Optional[str] = ..., Reason: _Optional[str] = ..., ContainerID: _Optional[str] = ..., IfName: _Optional[str] = ..., NetworkName: _Optional[str] = ..., K8S_POD_UID: _Optional[str] = ...) -> None: ...

class DelNetworkReply(_message.Message):
    __slots__ = ("Success", "IPAllocationMetadata", "PodVlanId", "NetworkPolicyMode")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    IPALLOCATIONMETADATA_FIELD_NUMBER: _ClassVar[int]
    PODVLANID_FIELD_NUMBER: _ClassVar[int]
    NETWORKPOLICYMODE_FIELD_NUMBER: _ClassVar[int]
    Success: bool
    IPAllocationMetadata: _containers.RepeatedCompositeFieldContainer[IPAllocationMetadata]
    PodVlanId: int
    NetworkPolicyMode: str
    def __init__(self, Success: _Optional[bool] = ..., IPAllocationMetadata: _Optional[_Iterable[_Union[IPAllocationMetadata, _Mapping]]] = ..., PodVlanId: _Optional[int] = ..., NetworkPolicyMode: _Optional[str] = ...) -> None: ...

class EnforceNpRequest(_message.Message):
    __slots__ = ("K8S_POD_NAME", "K8S_POD_NAMESPACE", "NETWORK_POLICY_MODE", "InterfaceCount")
    K8S_POD_NAME_FIELD_NUMBER: _ClassVar[int]
    K8S_POD_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NETWORK_POLICY_MODE_FIELD_NUMBER: _ClassVar[int]
    INTERFACECOUNT_FIELD_NUMBER: _ClassVar[int]
    K8S_POD_NAME: str
    K8S_POD_NAMESPACE: str
    NETWORK_POLICY_MODE: str
    InterfaceCount: int
    def __init__(self, K8S_POD_NAME: _Optional[str] = ..., K8S_POD_NAMESPACE: _Optional[str] = ..., NETWORK_POLICY_MODE: _Optional[str] = ..., InterfaceCount: _Optional[int] = ...) -> None: ...

class EnforceNpReply(_message.Message):
    __slots__ = ("Success",)
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    Success: bool
    def __init__(self, Success: _Optional[bool] = ...) -> None: ...

class DeleteNpRequest(_message.Message):
    __slots__ = ("K8S_POD_NAME", "K8S_POD_NAMESPACE")
    K8S_POD_NAME_FIELD_NUMBER: _ClassVar[int]
    K8S_POD_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    K8S_POD_NAME: str
    K8S_POD_NAMESPACE: str
    def __init__(self, K8S_POD_NAME: _Optional[str] = ..., K8S_POD_NAMESPACE: _Optional[str] = ...) -> None: ...

class DeleteNpReply(_message.Message):
    __slots__ = ("Success",)
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    Success: bool
    def __init__(self, Success: _Optional[bool] = ...) -> None: ...

class NetworkPolicyAgentConfigReply(_message.Message):
    __slots__ = ("NetworkPolicyMode", "MultiNICEnabled", "NodeIPv4", "NodeIPv6", "InstanceID", "Region")
    NETWORKPOLICYMODE_FIELD_NUMBER: _ClassVar[int]
    MULTINICENABLED_FIELD_NUMBER: _ClassVar[int]
    NODEIPV4_FIELD_NUMBER: _ClassVar[int]
    NODEIPV6_FIELD_NUMBER: _ClassVar[int]
    INSTANCEID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    NetworkPolicyMode: str
    MultiNICEnabled: bool
    NodeIPv4: str
    NodeIPv6: str
    InstanceID: str
    Region: str
    def __init__(self, NetworkPolicyMode: _Optional[str] = ..., MultiNICEnabled: _Optional[bool] = ..., NodeIPv4: _Optional[str] = ..., NodeIPv6: _Optional[str] = ..., InstanceID: _Optional[str] = ..., Region: _Optional[str] = ...) -> None: ...
