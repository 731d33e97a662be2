"""CLLM4Rec (Zhu et al., WWW 2024): user/item ID tokens in a frozen keras-hub causal LM.

vocab (ID-token vocabulary extension), documents (soft+hard-prompt documents,
bucketed batches), model (collaborative / content LM heads, mutual
regularisation, item prediction head), train (alternating pre-training and
recommendation-oriented fine-tuning), scoring (the evaluator's scorer), store
(saved tables), job (`learn train --model cllm4rec`, evaluation), protocol
(CLLM4Rec's own split and metrics).
"""
