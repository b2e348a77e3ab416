"""The offline AWS services: Device Defender, IoT Jobs, cloud-side Detect metrics, the broker bridge."""
