"""Pieces every omniforge process shares: settings, model bundles, the registry, backends."""
