"""The GAN zoo: a size-agnostic DCGAN, one registry of adversarial losses, a trainer."""
