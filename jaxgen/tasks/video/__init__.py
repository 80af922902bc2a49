"""Video tasks: text-to-video inflated from a trained text-to-image run (`text_to_video`)."""
