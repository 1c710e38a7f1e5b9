"""vl2spike_ros.export: the spiking part of a place model for neuromorphic tools.

``spec`` reads a place model's spiking stem into plain layers (BatchNorm folded, every mapping
choice documented), ``variants`` makes int8 / integrate-and-fire versions, ``reference`` runs
them in spikingjelly, ``nir_io`` writes and reads NIR files and runs them in norse and
snntorch, ``chips`` counts neurons, synapses and memory against published chip limits.
A leaf: nothing on the robot path imports it.
"""
