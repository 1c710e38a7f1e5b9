"""Energy accounting: counting rules that work on any ``nn.Module`` (45 nm MAC/AC costs).

See :mod:`vl2spike_ros.energy.counting` for the method.
"""
from .counting import (E_AC_PJ, E_MAC_PJ, energy_mj, rate_projection_count, spike_count_rules,
                       student_energy, teacher_energy)

__all__ = ["E_AC_PJ", "E_MAC_PJ", "energy_mj", "rate_projection_count", "spike_count_rules",
           "student_energy", "teacher_energy"]
