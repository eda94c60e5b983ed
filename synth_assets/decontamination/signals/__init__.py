"""The contamination signals between code exercises and benchmark problems, one module
each (phi-1 section 5, issue 17), over the `CodeDocument` split in `code_document`:

1. `ngram`      13-gram overlap of docstring words and code tokens (phi-1 section 5.1);
2. `minhash`    MinHash Jaccard of identifier/literal-normalised code shingles;
3. `embedding`  cosine (and L2) of embedding vectors from the LLM layer;
4. `ast`        match rate of normalised AST subtrees (phi-1 section 5.2), after the
                structure rewriting of `ast_canonical` (loops, comprehensions, if/else);
5. `functional` the exercise run against a problem's official tests in the sandbox, for
                the candidates the others rank nearest (`nearest`) and same-signature ones;
6. `judge`      an optional LLM verdict for rows just below the thresholds.

`synth_assets.decontamination.benchmark_index` builds every index over one benchmark,
scores exercises with all of them and turns the scores into a verdict.
"""
