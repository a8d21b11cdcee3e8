"""Tests of the deployment: the image, compose and the Kubernetes manifests."""
