"""What more than one runtime needs: the dynamic batcher and its configuration."""
