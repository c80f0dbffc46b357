"""The network: a VPC over two availability zones, public and private subnets, egress routes.

The VPC range is cut into four equal subnets: public a and b (a route to the internet gateway,
used for the hosts' egress in dev and ephemeral stacks and for the NAT gateway in prod) and
private a and b (no route to the internet gateway: the database, and in prod the hosts, whose
egress goes through one NAT gateway). A free S3 gateway endpoint keeps bucket traffic inside
AWS, and the VPC's default security group is emptied so nothing can use it by accident.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

CONTROL_HOST_INDEX = 10  # the control host's fixed address: the 10th host address of its subnet
ZONES = ("a", "b")


@dataclass(frozen=True)
class SubnetPlan:
    """The four subnet ranges cut from the VPC range, one public and one private per zone."""

    public: tuple[str, str]
    private: tuple[str, str]


def plan_subnets(vpc_cidr: str) -> SubnetPlan:
    """Cut ``vpc_cidr`` into quarters: public a, public b, private a, private b."""
    vpc = ipaddress.IPv4Network(vpc_cidr)
    quarters = [str(net) for net in vpc.subnets(new_prefix=vpc.prefixlen + 2)]
    return SubnetPlan(public=(quarters[0], quarters[1]), private=(quarters[2], quarters[3]))


def fixed_host_address(subnet_cidr: str, index: int = CONTROL_HOST_INDEX) -> str:
    """The ``index``-th host address of a subnet (AWS reserves the first three and the last)."""
    subnet = ipaddress.IPv4Network(subnet_cidr)
    if not 4 <= index < subnet.num_addresses - 1:
        raise ValueError(f"address index {index} is reserved or outside {subnet_cidr}")
    return str(subnet.network_address + index)


@dataclass(frozen=True, kw_only=True)
class NetworkArgs:
    """Inputs of the network."""

    vpc_cidr: str
    region: str
    hosts_in_private_subnets: bool  # prod: hosts behind a NAT gateway; otherwise a public address
    host_instance_types: Sequence[str]  # both zones must offer every one of them


class Network(pulumi.ComponentResource):
    """VPC, subnets, gateways and routes; exposes where the hosts and the database go."""

    vpc_id: pulumi.Output[str]
    host_subnet_ids: list[pulumi.Output[str]]
    database_subnet_ids: list[pulumi.Output[str]]
    control_private_ip: str
    host_prerequisites: list[pulumi.Resource]  # what hosts (and RDS) are created after

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlops:index:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        plan = plan_subnets(args.vpc_cidr)
        zones = self._zones(args.host_instance_types)

        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.vpc_cidr,
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags={"Name": f"{name}-vpc"},
            opts=child,
        )
        aws.ec2.DefaultSecurityGroup(
            f"{name}-default-sg",
            vpc_id=vpc.id,
            tags={"Name": f"{name}-default-sg (no rules: unused)"},
            opts=child,
        )
        gateway = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=vpc.id, tags={"Name": f"{name}-igw"}, opts=child
        )
        public = [
            self._subnet(f"{name}-public-{z}", vpc.id, cidr, zone)
            for z, cidr, zone in zip(ZONES, plan.public, zones, strict=True)
        ]
        private = [
            self._subnet(f"{name}-private-{z}", vpc.id, cidr, zone)
            for z, cidr, zone in zip(ZONES, plan.private, zones, strict=True)
        ]

        public_routes, public_associations = self._route_table(f"{name}-public", vpc.id, public)
        public_default = aws.ec2.Route(
            f"{name}-public-default",
            route_table_id=public_routes.id,
            destination_cidr_block="0.0.0.0/0",
            gateway_id=gateway.id,
            opts=child,
        )
        private_routes, private_associations = self._route_table(f"{name}-private", vpc.id, private)
        # The routes a host needs to reach the internet (dnf, PyPI) from its subnet.
        host_egress: list[pulumi.Resource] = [public_default, *public_associations]
        if args.hosts_in_private_subnets:
            nat_route = self._nat_egress(name, public[0], private_routes, gateway)
            host_egress = [nat_route, *private_associations]
        aws.ec2.VpcEndpoint(
            f"{name}-s3-endpoint",
            vpc_id=vpc.id,
            service_name=f"com.amazonaws.{args.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[public_routes.id, private_routes.id],
            tags={"Name": f"{name}-s3-endpoint"},
            opts=child,
        )

        host_tier, host_cidrs = (
            (private, plan.private) if args.hosts_in_private_subnets else (public, plan.public)
        )
        self.vpc_id = vpc.id
        self.host_subnet_ids = [subnet.id for subnet in host_tier]
        self.database_subnet_ids = [subnet.id for subnet in private]
        self.control_private_ip = fixed_host_address(host_cidrs[0])
        reservation = aws.ec2.SubnetCidrReservation(
            f"{name}-control-address",
            subnet_id=host_tier[0].id,
            cidr_block=f"{self.control_private_ip}/32",
            reservation_type="explicit",
            description="the control host's fixed address: assigned only on request",
            opts=child,
        )
        self.host_prerequisites = [reservation, *host_egress]
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "host_subnet_ids": self.host_subnet_ids,
                "database_subnet_ids": self.database_subnet_ids,
                "control_private_ip": self.control_private_ip,
            }
        )

    def _zones(self, instance_types: Sequence[str]) -> list[str]:
        """The first two zones of the region (no opt-in zones) that offer every host type."""
        invoke = pulumi.InvokeOptions(parent=self)
        zones = aws.get_availability_zones(
            state="available",
            filters=[{"name": "opt-in-status", "values": ["opt-in-not-required"]}],
            opts=invoke,
        )
        wanted = sorted(set(instance_types))
        offers = aws.ec2.get_instance_type_offerings(
            location_type="availability-zone",
            filters=[{"name": "instance-type", "values": wanted}],
            opts=invoke,
        )
        offered: dict[str, set[str]] = {}
        for instance_type, zone in zip(offers.instance_types, offers.locations, strict=True):
            offered.setdefault(zone, set()).add(instance_type)
        usable = [zone for zone in zones.names if offered.get(zone, set()) >= set(wanted)]
        if len(usable) < len(ZONES):
            raise pulumi.RunError(
                "mlops-platform:controlInstanceType / mlops-platform:workerInstanceType: "
                f"expected types offered in at least {len(ZONES)} availability zones; "
                f"{', '.join(wanted)} are offered together in {usable or 'none'}"
            )
        return usable[: len(ZONES)]

    def _subnet(self, name: str, vpc_id: pulumi.Input[str], cidr: str, zone: str) -> aws.ec2.Subnet:
        """A subnet that never gives launched instances a public address on its own."""
        return aws.ec2.Subnet(
            name,
            vpc_id=vpc_id,
            cidr_block=cidr,
            availability_zone=zone,
            map_public_ip_on_launch=False,
            tags={"Name": name},
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _route_table(
        self, name: str, vpc_id: pulumi.Input[str], subnets: Sequence[aws.ec2.Subnet]
    ) -> tuple[aws.ec2.RouteTable, list[aws.ec2.RouteTableAssociation]]:
        """A route table and its associations with ``subnets`` (routes are separate resources)."""
        table = aws.ec2.RouteTable(
            f"{name}-routes",
            vpc_id=vpc_id,
            tags={"Name": f"{name}-routes"},
            opts=pulumi.ResourceOptions(parent=self),
        )
        associations = [
            aws.ec2.RouteTableAssociation(
                f"{name}-{zone}-routes",
                subnet_id=subnet.id,
                route_table_id=table.id,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for zone, subnet in zip(ZONES, subnets, strict=True)
        ]
        return table, associations

    def _nat_egress(
        self,
        name: str,
        public_subnet: aws.ec2.Subnet,
        private_routes: aws.ec2.RouteTable,
        gateway: aws.ec2.InternetGateway,
    ) -> aws.ec2.Route:
        """One NAT gateway (in public a) as the private subnets' default route."""
        child = pulumi.ResourceOptions(parent=self)
        address = aws.ec2.Eip(
            f"{name}-nat-ip", domain="vpc", tags={"Name": f"{name}-nat-ip"}, opts=child
        )
        nat = aws.ec2.NatGateway(
            f"{name}-nat",
            allocation_id=address.id,
            subnet_id=public_subnet.id,
            connectivity_type="public",
            tags={"Name": f"{name}-nat"},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[gateway]),
        )
        return aws.ec2.Route(
            f"{name}-private-default",
            route_table_id=private_routes.id,
            destination_cidr_block="0.0.0.0/0",
            nat_gateway_id=nat.id,
            opts=child,
        )
