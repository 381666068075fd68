"""The units of the OME-NGFF 0.6 specification and how they meet atlasreg's nm / µm / mm spaces.

NGFF names space units after UDUNITS-2 (``"micrometer"``, ``"angstrom"``,
``"parsec"``, ...). Transform evaluation never needs them (an NGFF transform maps
numbers; its parameters already carry any unit change). An atlasreg
:class:`~atlasreg.spaces.Space` is in nm, µm or mm, so a coordinate system in
another length unit is met at the boundary by an exact factor: a system in
``angstrom`` becomes a Space in nm whose numbers are the file's times 0.1.
"""
from __future__ import annotations

from fractions import Fraction

from ...errors import InputError

#: Space units of the NGFF 0.6 specification, as multiples of one nanometre (exact fractions).
SPACE_UNITS_NM: dict[str, Fraction] = {
    "yoctometer": Fraction(1, 10**15), "zeptometer": Fraction(1, 10**12), "attometer": Fraction(1, 10**9),
    "femtometer": Fraction(1, 10**6), "picometer": Fraction(1, 10**3), "angstrom": Fraction(1, 10),
    "nanometer": Fraction(1), "micrometer": Fraction(10**3), "millimeter": Fraction(10**6),
    "centimeter": Fraction(10**7), "decimeter": Fraction(10**8), "meter": Fraction(10**9),
    "hectometer": Fraction(10**11), "kilometer": Fraction(10**12), "megameter": Fraction(10**15),
    "gigameter": Fraction(10**18), "terameter": Fraction(10**21), "petameter": Fraction(10**24),
    "exameter": Fraction(10**27), "zettameter": Fraction(10**30), "yottameter": Fraction(10**33),
    "inch": Fraction(254 * 10**5), "foot": Fraction(3048 * 10**5), "yard": Fraction(9144 * 10**5),
    "mile": Fraction(1609344 * 10**6),
    # IAU 2015: 1 pc = 648000/pi au, 1 au = 149597870700 m (pi makes it inexact; nearest nanometre).
    "parsec": Fraction(30856775814913673 * 10**9),
}
#: Time units of the specification (accepted on time axes; atlasreg spaces never take them).
TIME_UNITS = frozenset({
    "attosecond", "centisecond", "day", "decisecond", "exasecond", "femtosecond", "gigasecond", "hectosecond",
    "hour", "kilosecond", "megasecond", "microsecond", "millisecond", "minute", "nanosecond", "petasecond",
    "picosecond", "second", "terasecond", "yoctosecond", "yottasecond", "zeptosecond", "zettasecond"})

#: atlasreg unit -> NGFF unit name.
ATLASREG_TO_NGFF = {"nm": "nanometer", "um": "micrometer", "mm": "millimeter"}
_ATLASREG_NM = {"nm": Fraction(1), "um": Fraction(10**3), "mm": Fraction(10**6)}
# Common spellings other tools write for the same units.
_ALIASES = {"nm": "nanometer", "um": "micrometer", "µm": "micrometer", "μm": "micrometer",
            "micron": "micrometer", "mm": "millimeter", "m": "meter", "cm": "centimeter", "pm": "picometer",
            "Å": "angstrom", "Å": "angstrom", "A": "angstrom", "nanometre": "nanometer",
            "micrometre": "micrometer", "millimetre": "millimeter", "metre": "meter"}


def ngff_unit(name: str) -> str:
    """The specification's name of a space unit (``"µm"`` -> ``"micrometer"``); InputError if unknown.

    >>> ngff_unit("Å")
    'angstrom'
    """
    u = _ALIASES.get(name, name) if isinstance(name, str) else name
    if u not in SPACE_UNITS_NM:
        raise InputError(f"unknown space unit {name!r}; NGFF space units are {', '.join(sorted(SPACE_UNITS_NM))}",
                         field="unit")
    return u


def to_atlasreg_unit(name: str) -> tuple[str, float]:
    """The atlasreg unit for an NGFF space unit and the factor taking atlasreg numbers to the file's.

    nm, µm and mm map onto themselves (factor 1). Smaller units map to nm,
    larger ones to mm; the factor is exact for every decimal unit.

    >>> to_atlasreg_unit("angstrom")
    ('nm', 10.0)
    >>> to_atlasreg_unit("meter")
    ('mm', 0.001)
    """
    u = ngff_unit(name)
    nm = SPACE_UNITS_NM[u]
    target = "nm" if nm < _ATLASREG_NM["um"] else ("um" if nm < _ATLASREG_NM["mm"] else "mm")
    if u in ("nanometer", "micrometer", "millimeter"):
        target = {"nanometer": "nm", "micrometer": "um", "millimeter": "mm"}[u]
    # file number = atlasreg number * factor, since one file unit is `nm` nanometres.
    return target, float(_ATLASREG_NM[target] / nm)
