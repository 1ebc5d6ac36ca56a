terraform {
  required_version = ">= 1.11.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.23.0, < 8.0.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.7.0, < 4.0.0"
    }
  }

  # Keep the state in a versioned GCS bucket (created once by hand, see
  # docs/deploy-gcp.md). Generated secrets never enter the state, but IPs,
  # names and the Cloud SQL CA do.
  # backend "gcs" {
  #   bucket = "YOUR_PROJECT-tfstate"
  #   prefix = "drove"
  # }
}
