-- `gremio flag RUT --remove`: lift the RUT's flag; returns the RUT if it was flagged.
delete from background_flags
where rut = %(rut)s
returning rut
