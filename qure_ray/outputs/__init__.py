"""Result documents built from results: for now the results JSON; SC, SR and PDF follow."""

from qure_ray.outputs.result_json import result_body

__all__ = ["result_body"]
