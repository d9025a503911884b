"""Autograding 06-tracing: the solution scores full marks, the blank exercise 0, and each
wrong implementation loses exactly the points of the grade cells it breaks.

A wrong ``TraceContext`` or ``parse_traceparent`` also breaks the learner's middleware
(it is built on them), so those mutants lose the middleware cells whose behaviour they
really break, and only those. The middleware cells run three to five real aiohttp
services on 127.0.0.1 per check.
"""

from __future__ import annotations

import functools

from tests.grading import (
    GRADING_MARKS,
    GradingChecks,
    Mutant,
    mutant_of,
)

pytestmark = GRADING_MARKS

ASSIGNMENT = "06-tracing"
NOTEBOOK = "06-tracing"
GRADE_CELLS = {
    "trace_context_values": 2,
    "trace_context_validation": 1,
    "trace_context_new_root": 1,
    "trace_context_child": 2,
    "parse_valid_headers": 2,
    "parse_invalid_format": 2,
    "parse_zero_ids": 1,
    "parse_versions": 2,
    "parse_sampled_flag": 1,
    "middleware_keeps_one_trace": 3,
    "middleware_links_parents": 3,
    "middleware_continues_incoming_trace": 2,
    "middleware_records_names_and_times": 1,
    "bottleneck_local_vs_downstream": 2,
    "bottleneck_sums_per_service": 1,
    "bottleneck_overlapping_children": 2,
    "bottleneck_ties": 1,
    "bottleneck_validation": 1,
    "answers_are_your_own": 1,
}

# A mutant: (answer cell to replace, its new source, the grade cells it must fail).
mutate = functools.partial(mutant_of, ASSIGNMENT, NOTEBOOK)

MUTANTS: dict[str, Mutant] = {
    'parse_accepts_upper_case': mutate(
        'parse_traceparent',
        ('                         text.strip(" \\t"), flags=re.DOTALL)',
         '                         text.strip(" \\t"), flags=re.DOTALL | re.IGNORECASE)'),
        ('    return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1))',
         '    return TraceContext(trace_id.lower(), span_id.lower(), bool(int(flags, 16) & 1))'),
        breaks={'parse_invalid_format'}),
    'parse_accepts_zero_ids': mutate(
        'parse_traceparent',
        ('        return None\n'
         '    if trace_id == "0" * 32 or span_id == "0" * 16:\n'
         '        return None',
         '        return None'),
        breaks={'parse_zero_ids'}),
    'parse_accepts_version_ff': mutate(
        'parse_traceparent',
        ('    if version == "ff" or (version == "00" and rest is not None):',
         '    if (version == "00" and rest is not None):'),
        breaks={'parse_versions'}),
    'parse_accepts_extra_fields_in_00': mutate(
        'parse_traceparent',
        ('    if version == "ff" or (version == "00" and rest is not None):',
         '    if version == "ff":'),
        breaks={'parse_versions'}),
    'parse_rejects_future_extra_fields': mutate(
        'parse_traceparent',
        ('    if version == "ff" or (version == "00" and rest is not None):',
         '    if version == "ff" or (rest is not None):'),
        breaks={'parse_versions'}),
    'sampled_from_whole_flags': mutate(
        'parse_traceparent',
        ('    return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1))',
         '    return TraceContext(trace_id, span_id, flags != "00")'),
        breaks={'parse_sampled_flag'}),
    'child_changes_trace_id': mutate(
        'TraceContext',
        ('                return TraceContext(self.trace_id, span_id, self.sampled)',
         '                return TraceContext(f"{rng.getrandbits(128):032x}", span_id, '
         'self.sampled)'),
        breaks={'middleware_continues_incoming_trace', 'middleware_keeps_one_trace',
                'trace_context_child'}),
    'child_reuses_span_id': mutate(
        'TraceContext',
        ('        while True:\n'
         '            span_id = f"{rng.getrandbits(64):016x}"\n'
         '            if span_id != "0" * 16 and span_id != self.span_id:\n'
         '                return TraceContext(self.trace_id, span_id, self.sampled)',
         '        return TraceContext(self.trace_id, self.span_id, self.sampled)'),
        breaks={'middleware_keeps_one_trace', 'trace_context_child'}),
    'middleware_new_root_every_hop': mutate(
        'tracing_middleware',
        ('        if incoming is None:',
         '        if True:'),
        breaks={'middleware_continues_incoming_trace', 'middleware_links_parents',
                'middleware_keeps_one_trace'}),
    'middleware_current_is_the_incoming_context': mutate(
        'tracing_middleware',
        ('        token = current_trace.set(ctx)',
         '        token = current_trace.set(incoming or ctx)'),
        breaks={'middleware_links_parents'}),
    'bottleneck_by_total_duration': mutate(
        'bottleneck',
        ('        own = (span.end - span.start) - covered',
         '        own = span.end - span.start'),
        breaks={'bottleneck_sums_per_service', 'bottleneck_local_vs_downstream'}),
    'bottleneck_sums_overlapping_children': mutate(
        'bottleneck',
        ('        for start, end in clipped:\n            start = max(start, reach)',
         '        for start, end in clipped:'),
        ('                covered += end - start\n                reach = end',
         '                covered += end - start'),
        breaks={'bottleneck_overlapping_children'}),
    'bottleneck_ties_to_last_name': mutate(
        'bottleneck',
        ('    return min(totals, key=lambda service: (-totals[service], service))',
         '    return max(totals, key=lambda service: (totals[service], service))'),
        breaks={'bottleneck_ties'}),
    'bottleneck_ties_to_first_seen': mutate(
        'bottleneck',
        ('    return min(totals, key=lambda service: (-totals[service], service))',
         '    return max(totals, key=totals.get)'),
        breaks={'bottleneck_ties'}),
    'reference_imported': ('TraceContext', 'from faultline.tracing import TraceContext',
                           {'answers_are_your_own'}),
}

class TestGrading(GradingChecks):
    ASSIGNMENT = ASSIGNMENT
    NOTEBOOK = NOTEBOOK
    GRADE_CELLS = GRADE_CELLS
    MUTANTS = MUTANTS
