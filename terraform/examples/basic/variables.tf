variable "project_id" {
  description = "Google Cloud project to deploy into."
  type        = string
}

variable "region" {
  description = "Region for the workers, the controller and Cloud SQL."
  type        = string
  default     = "europe-west1"
}

variable "worker_image" {
  description = "Worker image, e.g. europe-west1-docker.pkg.dev/PROJECT/drove/drove-worker:0.1.0."
  type        = string
}

variable "controller_image" {
  description = "Controller image, e.g. europe-west1-docker.pkg.dev/PROJECT/drove/drove:0.1.0."
  type        = string
}

variable "scaling_mode" {
  description = "autoscaler-metric, controller-resize or fixed (see the module's variable)."
  type        = string
  default     = "autoscaler-metric"
}

variable "max_workers" {
  description = "Largest number of worker VMs."
  type        = number
  default     = 10
}

variable "worker_spot" {
  description = "Run the workers on Spot VMs."
  type        = bool
  default     = false
}

variable "cloud_sql_deletion_protection" {
  description = "Protect the Cloud SQL instance from deletion; set false (and apply) before terraform destroy."
  type        = bool
  default     = true
}
