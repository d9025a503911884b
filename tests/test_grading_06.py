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
    'parse_accepts_upper_case': ('parse_traceparent', r'''
def parse_traceparent(text):
    """The TraceContext in a W3C traceparent header, or None if the header is invalid."""
    if not isinstance(text, str):
        return None
    match = re.fullmatch(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?",
                         text.strip(" \t"), flags=re.DOTALL | re.IGNORECASE)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return TraceContext(trace_id.lower(), span_id.lower(), bool(int(flags, 16) & 1))
''', {'parse_invalid_format'}),
    'parse_accepts_zero_ids': ('parse_traceparent', r'''
def parse_traceparent(text):
    """The TraceContext in a W3C traceparent header, or None if the header is invalid."""
    if not isinstance(text, str):
        return None
    match = re.fullmatch(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?",
                         text.strip(" \t"), flags=re.DOTALL)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1))
''', {'parse_zero_ids'}),
    'parse_accepts_version_ff': ('parse_traceparent', r'''
def parse_traceparent(text):
    """The TraceContext in a W3C traceparent header, or None if the header is invalid."""
    if not isinstance(text, str):
        return None
    match = re.fullmatch(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?",
                         text.strip(" \t"), flags=re.DOTALL)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if (version == "00" and rest is not None):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1))
''', {'parse_versions'}),
    'parse_accepts_extra_fields_in_00': ('parse_traceparent', r'''
def parse_traceparent(text):
    """The TraceContext in a W3C traceparent header, or None if the header is invalid."""
    if not isinstance(text, str):
        return None
    match = re.fullmatch(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?",
                         text.strip(" \t"), flags=re.DOTALL)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff":
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1))
''', {'parse_versions'}),
    'parse_rejects_future_extra_fields': ('parse_traceparent', r'''
def parse_traceparent(text):
    """The TraceContext in a W3C traceparent header, or None if the header is invalid."""
    if not isinstance(text, str):
        return None
    match = re.fullmatch(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?",
                         text.strip(" \t"), flags=re.DOTALL)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (rest is not None):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1))
''', {'parse_versions'}),
    'sampled_from_whole_flags': ('parse_traceparent', r'''
def parse_traceparent(text):
    """The TraceContext in a W3C traceparent header, or None if the header is invalid."""
    if not isinstance(text, str):
        return None
    match = re.fullmatch(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?",
                         text.strip(" \t"), flags=re.DOTALL)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return TraceContext(trace_id, span_id, flags != "00")
''', {'parse_sampled_flag'}),
    'child_changes_trace_id': mutate(
        'TraceContext', ("return TraceContext(self.trace_id, span_id, self.sampled)",
                         "return TraceContext(f\"{rng.getrandbits(128):032x}\", span_id, "
                         "self.sampled)"),
        breaks={'middleware_continues_incoming_trace', 'middleware_keeps_one_trace',
                'trace_context_child'}),
    'child_reuses_span_id': mutate(
        'TraceContext', ("""        while True:
            span_id = f"{rng.getrandbits(64):016x}"
            if span_id != "0" * 16 and span_id != self.span_id:
                return TraceContext(self.trace_id, span_id, self.sampled)""",
                         "        return TraceContext(self.trace_id, self.span_id, "
                         "self.sampled)"),
        breaks={'middleware_keeps_one_trace', 'trace_context_child'}),
    'middleware_new_root_every_hop': ('tracing_middleware', r'''
def tracing_middleware(service, collector):
    """An aiohttp middleware recording one server span per request, continuing the trace."""
    rng = random.Random()

    @web.middleware
    async def middleware(request, handler):
        incoming = parse_traceparent(request.headers.get("traceparent"))
        if True:
            ctx, parent_id = TraceContext.new_root(rng), None
        else:
            ctx, parent_id = incoming.child(rng), incoming.span_id
        loop = asyncio.get_running_loop()
        token = current_trace.set(ctx)
        start = loop.time()
        try:
            return await handler(request)
        finally:
            current_trace.reset(token)
            collector.record(Span(ctx.trace_id, ctx.span_id, parent_id, service,
                                  f"{request.method} {request.path}", start, loop.time()))

    return middleware
''', {'middleware_continues_incoming_trace', 'middleware_keeps_one_trace',
     'middleware_links_parents'}),
    'middleware_current_is_the_incoming_context': ('tracing_middleware', r'''
def tracing_middleware(service, collector):
    """An aiohttp middleware recording one server span per request, continuing the trace."""
    rng = random.Random()

    @web.middleware
    async def middleware(request, handler):
        incoming = parse_traceparent(request.headers.get("traceparent"))
        if incoming is None:
            ctx, parent_id = TraceContext.new_root(rng), None
        else:
            ctx, parent_id = incoming.child(rng), incoming.span_id
        loop = asyncio.get_running_loop()
        token = current_trace.set(incoming or ctx)
        start = loop.time()
        try:
            return await handler(request)
        finally:
            current_trace.reset(token)
            collector.record(Span(ctx.trace_id, ctx.span_id, parent_id, service,
                                  f"{request.method} {request.path}", start, loop.time()))

    return middleware
''', {'middleware_links_parents'}),
    'bottleneck_by_total_duration': ('bottleneck', r'''
def bottleneck(spans):
    """The service with the largest self time in one trace; ties go to the first name."""
    spans = list(spans)
    if not spans:
        raise ValueError("spans must not be empty")
    children = {}
    for span in spans:
        children.setdefault(span.parent_id, []).append(span)
    totals = {}
    for span in spans:
        clipped = sorted((max(c.start, span.start), min(c.end, span.end))
                         for c in children.get(span.span_id, []))
        covered, reach = 0, span.start
        for start, end in clipped:
            start = max(start, reach)
            if end > start:
                covered += end - start
                reach = end
        own = span.end - span.start
        totals[span.service] = totals.get(span.service, 0) + own
    return min(totals, key=lambda service: (-totals[service], service))
''', {'bottleneck_local_vs_downstream', 'bottleneck_sums_per_service'}),
    'bottleneck_sums_overlapping_children': ('bottleneck', r'''
def bottleneck(spans):
    """The service with the largest self time in one trace; ties go to the first name."""
    spans = list(spans)
    if not spans:
        raise ValueError("spans must not be empty")
    children = {}
    for span in spans:
        children.setdefault(span.parent_id, []).append(span)
    totals = {}
    for span in spans:
        clipped = sorted((max(c.start, span.start), min(c.end, span.end))
                         for c in children.get(span.span_id, []))
        covered, reach = 0, span.start
        for start, end in clipped:
            if end > start:
                covered += end - start
        own = (span.end - span.start) - covered
        totals[span.service] = totals.get(span.service, 0) + own
    return min(totals, key=lambda service: (-totals[service], service))
''', {'bottleneck_overlapping_children'}),
    'bottleneck_ties_to_last_name': ('bottleneck', r'''
def bottleneck(spans):
    """The service with the largest self time in one trace; ties go to the first name."""
    spans = list(spans)
    if not spans:
        raise ValueError("spans must not be empty")
    children = {}
    for span in spans:
        children.setdefault(span.parent_id, []).append(span)
    totals = {}
    for span in spans:
        clipped = sorted((max(c.start, span.start), min(c.end, span.end))
                         for c in children.get(span.span_id, []))
        covered, reach = 0, span.start
        for start, end in clipped:
            start = max(start, reach)
            if end > start:
                covered += end - start
                reach = end
        own = (span.end - span.start) - covered
        totals[span.service] = totals.get(span.service, 0) + own
    return max(totals, key=lambda service: (totals[service], service))
''', {'bottleneck_ties'}),
    'bottleneck_ties_to_first_seen': ('bottleneck', r'''
def bottleneck(spans):
    """The service with the largest self time in one trace; ties go to the first name."""
    spans = list(spans)
    if not spans:
        raise ValueError("spans must not be empty")
    children = {}
    for span in spans:
        children.setdefault(span.parent_id, []).append(span)
    totals = {}
    for span in spans:
        clipped = sorted((max(c.start, span.start), min(c.end, span.end))
                         for c in children.get(span.span_id, []))
        covered, reach = 0, span.start
        for start, end in clipped:
            start = max(start, reach)
            if end > start:
                covered += end - start
                reach = end
        own = (span.end - span.start) - covered
        totals[span.service] = totals.get(span.service, 0) + own
    return max(totals, key=totals.get)
''', {'bottleneck_ties'}),
    'reference_imported': ('TraceContext', r'''
from faultline.tracing import TraceContext
''', {'answers_are_your_own'}),
}


class TestGrading(GradingChecks):
    ASSIGNMENT = ASSIGNMENT
    NOTEBOOK = NOTEBOOK
    GRADE_CELLS = GRADE_CELLS
    MUTANTS = MUTANTS
