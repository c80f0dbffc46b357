"""The resource type tokens the pack judges and the program creates, by service.

One list for the pack's checks, the Pulumi mocks (tests/support) and the tests that look
resources up by type, so a token written wrong fails everywhere at once instead of silently
matching nothing in one place.
"""

from __future__ import annotations

AWS_PROVIDER = "pulumi:providers:aws"

# S3
BUCKET = "aws:s3/bucket:Bucket"
BUCKET_V2 = "aws:s3/bucketV2:BucketV2"
PUBLIC_ACCESS = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
ENCRYPTION = (
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
)
VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"
LIFECYCLE = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
OWNERSHIP = "aws:s3/bucketOwnershipControls:BucketOwnershipControls"
BUCKET_ACL = "aws:s3/bucketAcl:BucketAcl"
BUCKET_OBJECT = "aws:s3/bucketObjectv2:BucketObjectv2"

# RDS
DB = "aws:rds/instance:Instance"
DB_PARAMS = "aws:rds/parameterGroup:ParameterGroup"
DB_SUBNETS = "aws:rds/subnetGroup:SubnetGroup"

# EC2: hosts and volumes
INSTANCE = "aws:ec2/instance:Instance"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
VOLUME = "aws:ebs/volume:Volume"

# EC2: the network
VPC = "aws:ec2/vpc:Vpc"
SUBNET = "aws:ec2/subnet:Subnet"
SUBNET_RESERVATION = "aws:ec2/subnetCidrReservation:SubnetCidrReservation"
INTERNET_GATEWAY = "aws:ec2/internetGateway:InternetGateway"
EIP = "aws:ec2/eip:Eip"
NAT = "aws:ec2/natGateway:NatGateway"
ROUTE_TABLE = "aws:ec2/routeTable:RouteTable"
ROUTE = "aws:ec2/route:Route"
ASSOCIATION = "aws:ec2/routeTableAssociation:RouteTableAssociation"
VPC_ENDPOINT = "aws:ec2/vpcEndpoint:VpcEndpoint"

# Security groups and their rules, in the three forms they come
GROUP = "aws:ec2/securityGroup:SecurityGroup"
DEFAULT_GROUP = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS_RULE = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"

# IAM
ROLE = "aws:iam/role:Role"
INSTANCE_PROFILE = "aws:iam/instanceProfile:InstanceProfile"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ROLE_POLICY_ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
ATTACHMENTS = (
    ROLE_POLICY_ATTACHMENT,
    "aws:iam/policyAttachment:PolicyAttachment",
    "aws:iam/userPolicyAttachment:UserPolicyAttachment",
    "aws:iam/groupPolicyAttachment:GroupPolicyAttachment",
)
POLICY_DOCUMENTS = (
    ROLE_POLICY,
    "aws:iam/policy:Policy",
    "aws:iam/userPolicy:UserPolicy",
    "aws:iam/groupPolicy:GroupPolicy",
)
IAM_USER = "aws:iam/user:User"
ACCESS_KEY = "aws:iam/accessKey:AccessKey"
LOGIN_PROFILE = "aws:iam/userLoginProfile:UserLoginProfile"
IAM_IDENTITIES = (IAM_USER, ACCESS_KEY, LOGIN_PROFILE)

# Secrets (type tokens, not credentials)
RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"  # noqa: S105
RANDOM_ID = "random:index/randomId:RandomId"
SECRET = "aws:secretsmanager/secret:Secret"  # noqa: S105
SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"  # noqa: S105

# TLS (pulumi-tls): the Dask cluster's CA and identities
TLS_PRIVATE_KEY = "tls:index/privateKey:PrivateKey"
TLS_SELF_SIGNED_CERT = "tls:index/selfSignedCert:SelfSignedCert"
TLS_CERT_REQUEST = "tls:index/certRequest:CertRequest"
TLS_LOCALLY_SIGNED_CERT = "tls:index/locallySignedCert:LocallySignedCert"

# Guardrails: the expiry schedule, the budget and its alert topic
SCHEDULE = "aws:scheduler/schedule:Schedule"
BUDGET = "aws:budgets/budget:Budget"
TOPIC = "aws:sns/topic:Topic"
TOPIC_POLICY = "aws:sns/topicPolicy:TopicPolicy"
SUBSCRIPTION = "aws:sns/topicSubscription:TopicSubscription"
