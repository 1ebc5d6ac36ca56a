# No providers on purpose: this module only computes the containers'
# settings and renders the cloud-init user-data, so it can be applied offline
# (scripts/tests/deploy renders it and checks the result).
terraform {
  required_version = ">= 1.9.0"
}
