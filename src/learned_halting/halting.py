"""Halting analysis: q(t|x,T) from halting logits, the KL to the prior, and stopping rules.

A function's halting logit is the running sum ``s_t = s_(t-1) + mean_increment_t`` (s_0 = 0) of the mean
over its coordinates of the halting head's increments; ``q(t | x, T) = softmax(s_1 .. s_T)``.
All step numbers returned here are 1-based.
"""

from __future__ import annotations

import torch


def halting_logits(increments: torch.Tensor) -> torch.Tensor:
    """(B, T) per-step function increments -> (B, T) cumulative logits ``s_t``."""
    return torch.cumsum(increments, dim=1)


def log_posterior(logits: torch.Tensor) -> torch.Tensor:
    """(B, T) logits ``s`` -> (B, T) ``log q(t | x, T)`` (log-softmax over steps)."""
    return torch.log_softmax(logits, dim=1)


def kl_to_prior(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """``KL(q || p) = sum_t q_t (log q_t - log p_t)``.

    Args:
        log_q: (B, T) log posterior; log_p: (T,) log prior.
    Returns:
        (B,) KL divergence of the posterior *from* the prior (the direction of the ELBO), >= 0.
    """
    q = log_q.exp()
    return (q * (log_q - log_p)).sum(dim=1)


def act_loss(nll: torch.Tensor, logits: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """The actV2 loss: mean over functions of ``sum_t q_t NLL_t + KL(q || p)``.

    Args:
        nll: (B, T) NLL of each function after each step; logits: (B, T); log_p: (T,).
    Returns:
        scalar tensor.
    """
    log_q = log_posterior(logits)
    expected_nll = (log_q.exp() * nll).sum(dim=1)
    return (expected_nll + kl_to_prior(log_q, log_p)).mean()


def mode_step(q: torch.Tensor) -> torch.Tensor:
    """(B, T) q -> (B,) int64 argmax step, 1-based (the first one on ties)."""
    return torch.argmax(q, dim=1) + 1


def stopping_step(q: torch.Tensor, threshold: float = 0.9) -> torch.Tensor:
    """(B, T) q -> (B,) int64 first step t (1-based) with ``sum_{t'<=t} q_t' >= threshold``.

    Where rounding keeps the cumulative sum just below the threshold at the end, the last step T.
    """
    reached = torch.cumsum(q, dim=1) >= threshold
    reached[:, -1] = True
    return torch.argmax(reached.to(torch.int8), dim=1) + 1


def online_stopping_step(logits: torch.Tensor, threshold: float = 0.95) -> torch.Tensor:
    """The original's online stopping rule (its legends' ``stop=N``; SPEC section 5).

    At step i >= 2 the logits seen so far are normalised, ``softmax(s_1 .. s_i)``; the function is
    stopped at step i while the mass of steps 1..i-1 exceeds ``threshold`` (equivalently the newest
    step's share is below ``1 - threshold``). The result is the number of steps at which the function
    had not stopped (step 1 always counts), needing only the logits seen so far.

    Args:
        logits: (B, T) halting logits ``s``.
    Returns:
        (B,) int64 in 1..T.
    """
    # share of the newest step i among steps 1..i: exp(s_i - logsumexp(s_1..s_i))
    newest_share = torch.exp(logits - torch.logcumsumexp(logits, dim=1))  # (B, T)
    running = newest_share[:, 1:] >= 1.0 - threshold
    return 1 + running.sum(dim=1)
