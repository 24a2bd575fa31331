"""model service: hero advantage, synergy, personal scores, win model, pick/ban suggestions."""
