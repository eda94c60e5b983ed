"""The `instructions` group: SFT data made the way the instruction-tuning papers made it,
each method one asset, and one LLM judge that scores every generated row.

- `self_instruct`        Self-Instruct (Wang et al. 2023): a seed pool, rounds, classification
                         vs generation, output-first vs input-first, ROUGE-L < 0.7 filter
- `alpaca_instructions`  Alpaca (Taori et al. 2023): instruction, input and output in one call
- `self_qa`              Self-QA (Zhang et al. 2023): questions and answers from corpus documents
- `evol_instruct`        Evol-Instruct (WizardLM, Xu et al. 2023): in-depth / in-breadth rounds
- `llm_judge`            AlpaGasus (Chen et al. 2023): a 0-5 score + rationale per row, a threshold

Plain code only this group uses: `rouge` (ROUGE-L), `filters` (Self-Instruct's length,
blacklist and similarity filters), `seed_pool` (the shipped seed tasks in `seeds/`),
`execution` (Python in outputs, parsed and run in the sandbox), `rows` (ids, table
schemas and metadata shared by the four instruction tables), `self_instruct_prompts`,
`evol_prompts` and `judge_rubrics` (the published prompts, shortened), `card` (the
release card's instruction section).
"""
