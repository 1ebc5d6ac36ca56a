terraform {
  # 1.11: write-only arguments, so generated passwords and tokens go to
  # Secret Manager without being stored in the state.
  required_version = ">= 1.11.0"

  required_providers {
    google = {
      source = "hashicorp/google"
      # 6.23: secret_data_wo (Secret Manager) and password_wo (Cloud SQL users).
      version = ">= 6.23.0, < 8.0.0"
    }
    random = {
      source = "hashicorp/random"
      # 3.7: the ephemeral random_password.
      version = ">= 3.7.0, < 4.0.0"
    }
  }
}
