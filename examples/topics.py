"""Topics of a small news corpus: KL-NMF, Frobenius NMF and truncated SVD (LSA) side by side.

Run: ``python examples/topics.py`` (needs gensim, which ships the Lee corpus; under a minute).

The document-term matrix of the Lee background corpus (300 news stories) is factorized three ways:

* **KL-NMF** on the counts: ``min D_KL(X || W H)``, W, H >= 0, by Lee & Seung's multiplicative
  updates. Up to normalization this is PLSA (Hofmann 1999; Gaussier & Goutte 2005): the rows of H,
  normalized, are topics ``p(word | topic)`` and the rows of W give ``p(topic | document)``.
* **Frobenius NMF** and **LSA** (truncated SVD, Deerwester et al. 1990) on the TF-IDF matrix, their
  usual input. LSA components have both signs; a topic is read off the largest positive loadings.

Each topic is scored by NPMI coherence over document co-occurrence (Bouma 2009; Aletras & Stevenson
2013): the mean over pairs of its top 10 words of ``log(P(a, b) / P(a) P(b)) / -log P(a, b)``, with
P the fraction of documents containing the words (-1 for pairs that never co-occur). Coherence is
measured on the same 300 documents, so it rewards topics that reflect real co-occurrence, not
generalization. Expect KL-NMF on raw counts to let frequent, general words into its topics (KL
fits counts, which are dominated by them), where TF-IDF input down-weights those words.

LDA (Blei, Ng & Jordan 2003) is the Bayesian version of the KL-NMF/PLSA model: the same
"documents are mixtures of word distributions", with Dirichlet priors on the mixtures and topics so
that unseen documents have a proper generative model; KL-NMF is its maximum-likelihood counterpart
without the priors.
"""

from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np

import jaxfact as jf
from jaxfact.datasets import load_lee_corpus

K, TOP = 10, 10
STOP = set("""a about above after again against all also am an and any are as at be because been
before being below between both but by can could did do does doing down during each few for from
further had has have having he her here hers herself him himself his how i if in into is it its
itself just me more most my myself no nor not now of off on once only or other our ours ourselves
out over own said same says she should so some such than that the their theirs them themselves then
there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves mr mrs one two three four
five new last year years told people s t""".split())

# --- document-term matrix ----------------------------------------------------------------------
docs = load_lee_corpus()
df = Counter(w for d in docs for w in set(d))
vocab = sorted(w for w, c in df.items()
               if c >= 3 and c <= 0.5 * len(docs) and len(w) > 2 and w not in STOP)
index = {w: j for j, w in enumerate(vocab)}
counts = np.zeros((len(docs), len(vocab)), np.float32)
for r, d in enumerate(docs):
    for w in d:
        if w in index:
            counts[r, index[w]] += 1
present = counts > 0
idf = np.log(len(docs) / present.sum(0))
tfidf = counts * idf
tfidf /= np.maximum(np.linalg.norm(tfidf, axis=1, keepdims=True), 1e-12)
print(f"Lee corpus: {len(docs)} documents, {len(vocab)} terms, {int(counts.sum())} tokens kept\n")


def npmi(top_words):
    B = present[:, top_words].astype(np.float64)
    n_docs = B.shape[0]
    p = B.mean(0)
    joint = (B.T @ B) / n_docs
    scores = []
    for a in range(len(top_words)):
        for b in range(a + 1, len(top_words)):
            if joint[a, b] == 0:
                scores.append(-1.0)
            elif joint[a, b] == 1:
                scores.append(1.0)
            else:
                scores.append(np.log(joint[a, b] / (p[a] * p[b])) / -np.log(joint[a, b]))
    return float(np.mean(scores))


def report(name, topics):
    top = [np.argsort(-t)[:TOP] for t in topics]
    coh = [npmi(t) for t in top]
    print(f"== {name}: mean NPMI {np.mean(coh):+.3f}")
    for t, c in sorted(zip(top, coh), key=lambda x: -x[1]):
        print(f"  {c:+.3f}  " + " ".join(vocab[j] for j in t))
    print()
    return float(np.mean(coh))


# --- the three factorizations ------------------------------------------------------------------
# The key drives the randomized SVD of the NNDSVD start (300 x 1000+ matrices; without a key the
# SVD would be exact).
kl = jf.nmf(jnp.asarray(counts), K, solver="mu", beta_loss="kullback-leibler", max_iter=400,
            tol=1e-5, key=jax.random.key(0))
fro = jf.nmf(jnp.asarray(tfidf), K, solver="hals", max_iter=400, tol=1e-5,
             key=jax.random.key(0))
lsa = jf.truncated_svd(jnp.asarray(tfidf), K)

summary = {
    "KL-NMF (counts)": report("KL-NMF on counts (PLSA)", np.asarray(kl.H)),
    "Frobenius NMF (TF-IDF)": report("Frobenius NMF on TF-IDF", np.asarray(fro.H)),
    # LSA: component signs are arbitrary (svd_flip fixes them); read the positive side.
    "LSA / truncated SVD (TF-IDF)": report("LSA (truncated SVD) on TF-IDF", np.asarray(lsa.Vt)),
}
print("mean NPMI of the top-10 words over 10 topics:")
for name, c in summary.items():
    print(f"  {name:30s} {c:+.3f}")
