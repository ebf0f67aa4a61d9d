"""Training: loss terms and optimiser steps for SR-TTT and the synthetic-only baseline."""
