"""What the AWS plugins share (the machine provider `aws`, the cluster provider `aws`, the IP
provider `aws-eni`): clients with botocore's retries, the meaning of AWS errors as step
errors, the platform's tags, and cloud-init user data.

boto3 is an optional dependency (`pip install tke[aws]`): nothing here imports it at module
level, so the platform loads these plugins, validates their specs and starts without it; the
first call to AWS says what to install.
"""
