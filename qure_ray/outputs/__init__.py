"""Result documents built from results: for now the results JSON; SC, SR and PDF follow."""

from qure_ray.outputs.result_json import label_text, result_body

__all__ = ["label_text", "result_body"]
