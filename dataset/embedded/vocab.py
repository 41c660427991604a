"""Vocabulary of the embedded LaMP-1 task: research fields and topic-neutral phrases.

Each field's phrases use content words no other field uses, and none of them occurs in
the title templates, the field-neutral sentences (editorials, abstract padding) or the
topic-neutral vocabulary. So the field of a paper shows only through its field's phrases,
while the sentence templates (shared by every field) give no hint about it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

# Function words that may appear inside phrases of any field.
STOPWORDS = frozenset({"a", "an", "and", "the", "of", "in", "on", "for", "to", "with", "from", "by"})
# Generic modifiers that several fields legitimately share ("human populations",
# "human-robot teaming"); they carry no field signal, so FieldVocab.words() leaves them out.
SHARED_WORDS = frozenset({"high", "multi", "human", "spatial", "functional", "model", "systems",
                          "population", "precision"})


def content_words(text: str) -> set[str]:
    """Lowercased word tokens of `text` (two characters or more) minus STOPWORDS."""
    return {word for word in re.findall(r"[a-z0-9]+", text.lower()) if len(word) > 1} - STOPWORDS


@dataclass(frozen=True)
class FieldVocab:
    """Phrases of one research field, by the slot they fill in a template.

    methods: noun phrases naming a technique ("gravitational lensing")
    objects: plural or mass noun phrases studied ("galaxy clusters")
    data: sources of evidence ("Kepler light curves")
    settings: phrases that read after "in" ("the early universe")
    properties: quantities of an object ("metallicity gradients")
    areas: sub-areas that results have implications for ("precision cosmology")
    """

    methods: tuple[str, ...]
    objects: tuple[str, ...]
    data: tuple[str, ...]
    settings: tuple[str, ...]
    properties: tuple[str, ...]
    areas: tuple[str, ...]

    def phrases(self) -> tuple[str, ...]:
        return tuple(phrase for slot in fields(self) for phrase in getattr(self, slot.name))

    def words(self) -> frozenset[str]:
        """Content words of this field's phrases that no other field uses (SHARED_WORDS excluded)."""
        return frozenset(word for phrase in self.phrases() for word in content_words(phrase)) - SHARED_WORDS


FIELDS: dict[str, FieldVocab] = {
    "astrophysics": FieldVocab(
        methods=("N-body simulations", "gravitational lensing", "photometric redshift fitting",
                 "photoionization codes", "stellar population templates", "weak lensing tomography",
                 "asteroseismology", "SED fitting", "cosmological hydrodynamics",
                 "radio interferometry", "transit photometry", "halo occupation fits"),
        objects=("galaxy clusters", "dark matter halos", "exoplanet atmospheres", "supernova remnants",
                 "active galactic nuclei", "protoplanetary disks", "globular clusters", "neutron star mergers",
                 "quasar absorption lines", "stellar streams", "white dwarf binaries", "the cosmic web",
                 "pulsar timing residuals", "brown dwarfs", "galactic bars", "Type Ia supernovae"),
        data=("Gaia astrometry", "Sloan spectroscopic catalogs", "Hubble ultraviolet spectra", "Kepler light curves",
              "Chandra observations", "radio continuum mosaics", "cosmic microwave background maps",
              "JWST infrared spectra", "gravitational wave catalogs", "21-cm intensity maps"),
        settings=("the early universe", "dwarf galaxies", "the Milky Way halo", "high-redshift quasars",
                  "nearby stellar nurseries", "the intracluster medium", "binary star systems",
                  "the galactic center", "low-metallicity stars", "young star clusters"),
        properties=("mass distributions", "metallicity gradients", "luminosity function", "angular momentum",
                    "orbital eccentricity", "velocity dispersion", "star formation history", "redshift evolution"),
        areas=("galaxy evolution", "precision cosmology", "exoplanet demographics", "stellar astrophysics",
               "multi-messenger astronomy", "observational cosmology"),
    ),
    "genomics": FieldVocab(
        methods=("genome-wide association testing", "single-cell RNA sequencing", "CRISPR knockout screens",
                 "long-read assembly", "variant calling", "chromatin accessibility profiling",
                 "phylogenetic inference", "eQTL colocalization", "polygenic scoring",
                 "haplotype phasing", "metagenomic binning", "methylation profiling"),
        objects=("gene regulatory networks", "enhancer elements", "structural variants",
                 "transcription factor binding sites", "microbial consortia", "copy number alterations",
                 "splicing isoforms", "noncoding RNAs", "rare coding variants", "tumor clonal lineages",
                 "mitochondrial genomes", "histone modifications", "promoter sequences", "somatic mutations",
                 "gene duplications", "ancestral haplotypes"),
        data=("whole-genome sequencing panels", "UK Biobank genotypes", "ENCODE chromatin tracks",
              "single-cell compendia", "tumor biopsies", "ancient DNA samples", "gut microbiome samples",
              "population reference panels", "Hi-C conformation matrices", "ATAC-seq peaks"),
        settings=("human populations", "plant genomes", "cancer patients", "model organisms",
                  "bacterial pathogens", "isolated founder populations", "mouse embryos",
                  "T lymphocytes", "crop breeding programs", "rare disease families"),
        properties=("heritability", "expression noise", "mutational processes", "linkage disequilibrium",
                    "allelic imbalance", "evolutionary conservation", "regulatory logic", "penetrance"),
        areas=("precision medicine", "functional genomics", "population genetics", "cancer biology",
               "evolutionary biology", "plant breeding"),
    ),
    "databases": FieldVocab(
        methods=("cost-based query planning", "recursive model indexes", "multiversion concurrency",
                 "vectorized execution", "adaptive join ordering", "incremental materialization",
                 "log-structured merge trees", "cardinality estimation", "columnar compression",
                 "deterministic transaction scheduling", "approximate query answering", "entity deduplication"),
        objects=("SQL workloads", "document stores", "secondary indexes", "materialized views",
                 "distributed transactions", "query plans", "join operators", "buffer pools",
                 "write-ahead logs", "graph queries", "stored procedures", "relational tables", "OLAP cubes",
                 "lakehouse tables", "spatial indexes", "windowed continuous joins"),
        data=("TPC-H benchmarks", "TPC-C runs", "production query logs", "JOB benchmark queries",
              "DBMS telemetry", "Zipf-skewed tables", "YCSB workloads", "SQLite installations",
              "EXPLAIN outputs", "database snapshots"),
        settings=("hosted analytics services", "geo-distributed replicas", "serverless runtimes",
                  "multi-tenant services", "disaggregated storage", "NVMe SSDs",
                  "partitioned architectures", "byte-addressable storage", "edge gateways",
                  "hybrid transactional workloads"),
        properties=("tail latency", "write amplification", "serializability", "throughput",
                    "consistency guarantees", "recovery latency", "index footprint", "plan quality"),
        areas=("query execution", "transaction processing", "storage engines", "database tuning",
               "analytical warehousing", "relational systems"),
    ),
    "computer vision": FieldVocab(
        methods=("convolutional backbones", "vision transformers", "contrastive pretraining",
                 "optical flow", "radiance fields", "generative inpainting", "keypoint matching",
                 "panoptic segmentation", "monocular depth completion", "object detectors",
                 "masked image pretraining", "instance segmentation"),
        objects=("pedestrian silhouettes", "facial landmarks", "scene graphs", "occluded objects",
                 "video frames", "3D point clouds", "image captions", "texture patches", "human poses",
                 "overhead imagery", "endoscopic videos", "handwritten digits", "camera viewpoints",
                 "visual attributes", "salient object contours", "adversarial patches"),
        data=("ImageNet", "COCO annotations", "KITTI drives", "Flickr photo albums", "photorealistic renderings",
              "egocentric video", "chest radiographs", "crowd-sourced bounding boxes",
              "street-view panoramas", "multi-view stereo captures"),
        settings=("self-driving cars", "nighttime scenes", "crowded urban scenes", "class-imbalanced recognition",
                  "drone photography", "few-shot regimes", "novel-category recognition", "indoor scenes",
                  "video surveillance", "clinical radiology"),
        properties=("pixel accuracy", "viewpoint invariance", "occlusion robustness", "spatial acuity",
                    "temporal smoothness", "uncertainty quantification", "visual fidelity", "label budget"),
        areas=("visual categorization", "photorealistic rendering", "scene interpretation", "video summarization",
               "multi-view geometry", "visual perception"),
    ),
    "robotics": FieldVocab(
        methods=("model predictive control", "behavior cloning", "compliance control",
                 "probabilistic roadmaps", "eye-in-hand servoing", "trajectory optimization",
                 "inverse kinematics", "domain randomization", "humanoid posture control", "tactile feedback control",
                 "simultaneous localization and mapping", "legged locomotion controllers"),
        objects=("robotic grasps", "manipulator arms", "quadruped gaits", "mobile robots", "dexterous hands",
                 "aerial drones", "soft actuators", "exoskeletons", "swarm formations", "humanoid balance",
                 "grasp affordances", "cable-driven joints", "wheeled rovers", "underwater vehicles",
                 "collision-free paths", "contact forces"),
        data=("teleoperation demonstrations", "motion capture takes", "force-torque readings", "lidar scans",
              "inertial odometry", "simulated rollouts", "tactile sensor skins", "wheel odometry",
              "kinesthetic demonstrations", "robot fleet deployments"),
        settings=("warehouse picking", "unstructured terrain", "home environments", "surgical assistance",
                  "fruit orchards", "planetary exploration", "human-robot teaming",
                  "search and rescue", "automotive manufacturing plants", "cluttered shelves"),
        properties=("grasp success", "locomotion energetics", "path deviation", "balance margins",
                    "dexterity", "collision safety", "payload capacity", "sample efficiency"),
        areas=("robot manipulation", "legged locomotion", "outdoor robotics", "autonomous navigation",
               "assistive robotics", "human-robot interaction"),
    ),
    "climate science": FieldVocab(
        methods=("statistical downscaling", "ensemble forecasting", "variational assimilation",
                 "Earth system simulation", "heat extreme attribution", "quantile bias correction",
                 "convective parameterization", "atmospheric carbon budgeting", "teleconnection diagnostics",
                 "regional climate projections", "hindcast nudging", "storm track climatology"),
        objects=("monsoon rainfall", "Arctic sea ice", "atmospheric rivers", "heatwaves", "tropical cyclones",
                 "ocean heat content", "permafrost thaw", "aerosol forcing", "cloud feedbacks",
                 "El Nino events", "glacier melt", "drought indices", "boreal wildfires",
                 "jet stream meanders", "soil moisture", "marine heatwaves"),
        data=("CMIP6 ensembles", "ERA5 reanalysis", "satellite altimetry", "homogenized station series",
              "ice cores", "Argo float casts", "radiosonde soundings", "tide gauge series",
              "precipitation radar", "eddy covariance fluxes"),
        settings=("a warming climate", "the Southern Ocean", "semi-arid regions", "the Tibetan Plateau",
                  "coastal megacities", "the tropical Pacific", "mid-latitude winters", "the Sahel",
                  "high mountain Asia", "polar regions"),
        properties=("decadal variability", "return periods", "transient climate response",
                    "trend significance", "seasonal predictability", "spatial extent",
                    "top-of-atmosphere forcing", "recurrence intervals"),
        areas=("climate resilience", "hydroclimate", "seasonal prediction", "climate impact assessment",
               "paleoclimate", "atmospheric circulation"),
    ),
    "cryptography": FieldVocab(
        methods=("lattice cryptosystems", "zero-knowledge proofs", "homomorphic encryption",
                 "side-channel cryptanalysis", "differential cryptanalysis", "threshold signatures",
                 "oblivious transfer", "garbled circuits", "secure multiparty computation",
                 "post-quantum key exchange", "elliptic curve pairings", "verifiable random functions"),
        objects=("block ciphers", "hash functions", "signature schemes", "key encapsulation mechanisms",
                 "commitment schemes", "pseudorandom generators", "authenticated channels", "password vaults",
                 "smart card firmware", "TLS handshakes", "blockchain ledgers", "private set intersection",
                 "anonymous credentials", "ciphertext policies", "random oracles", "AES implementations"),
        data=("power traces", "cache eviction traces", "certificate transparency feeds", "laser fault injections",
              "Ethereum contracts", "leaked password dumps", "cipher test vectors",
              "electromagnetic emanations", "mechanized proof scripts", "protocol fuzzing traces"),
        settings=("the quantum random oracle model", "constrained IoT devices", "the standard model",
                  "malicious adversaries", "embedded microcontrollers", "decentralized finance",
                  "hardware enclaves", "honest-majority quorums", "universal composability",
                  "lossy channels"),
        properties=("ciphertext size", "concrete security", "reduction tightness", "forward secrecy",
                    "constant-time implementations", "leakage bounds", "key size", "soundness"),
        areas=("applied cryptography", "public-key cryptography", "secure protocols", "hardware security",
               "post-quantum standardization", "privacy-enhancing technologies"),
    ),
    "linguistics": FieldVocab(
        methods=("morphological parsing", "dependency parsing", "phonological rule induction",
                 "corpus annotation", "saccades during reading", "sociophonetic fieldwork",
                 "syntactic priming", "typological comparison", "discourse annotation",
                 "diachronic reconstruction", "code-switching annotation", "semantic role tagging"),
        objects=("verb argument structure", "vowel harmony", "relative clauses", "tone sandhi",
                 "evidential markers", "loanword adaptation", "grammatical gender", "word order variation",
                 "honorific registers", "clause chaining", "ergative alignment", "anaphoric pronouns",
                 "idiomatic expressions", "polysemous nouns", "creole grammars", "politeness strategies"),
        data=("spoken corpora", "treebanks", "elicitation notes", "parallel Bible translations",
              "child language transcripts", "social media posts", "historical manuscripts",
              "sign language footage", "dialect atlases", "acceptability judgments"),
        settings=("endangered languages", "Bantu languages", "bilingual speakers",
                  "second language acquisition", "Austronesian languages", "sign languages",
                  "heritage speakers", "toddlers", "Romance dialects", "tonal languages"),
        properties=("grammaticality", "lexical frequency", "morphological complexity",
                    "cross-linguistic variation", "syntactic productivity", "prosodic prominence",
                    "semantic compositionality", "dialectal diversity"),
        areas=("syntax", "phonology", "sociolinguistics", "language typology", "psycholinguistics",
               "historical linguistics"),
    ),
    "neuroscience": FieldVocab(
        methods=("calcium imaging", "optogenetic stimulation", "patch-clamp electrophysiology",
                 "diffusion tractography", "functional MRI decoding", "spike sorting",
                 "serial-section connectomics", "multiphoton imaging", "magnetoencephalography",
                 "deep brain stimulation", "chemogenetic silencing", "neural population decoding"),
        objects=("hippocampal place cells", "dopamine neurons", "cortical oscillations", "synaptic plasticity",
                 "grid cells", "thalamocortical loops", "working memory", "motor cortex rhythms",
                 "sleep spindles", "striate cortex neurons", "basal ganglia loops", "dendritic spikes",
                 "inhibitory interneurons", "auditory cortex responses", "fear memories", "striatal assemblies"),
        data=("Neuropixels spike trains", "human connectome volumes", "scalp EEG", "intracranial electrocorticography",
              "rodent behavioral assays", "macaque electrophysiology", "fMRI cohorts",
              "human brain tissue sections", "zebrafish larval imaging", "hippocampal slice preparations"),
        settings=("freely moving mice", "the aging brain", "virtual mazes", "decision-making tasks",
                  "songbirds", "Parkinsonism", "sleep deprivation", "sensory deprivation",
                  "non-human primates", "neurodevelopment"),
        properties=("firing irregularity", "spike synchrony", "excitability", "functional connectivity",
                    "spike train reliability", "oscillatory coherence", "orientation selectivity",
                    "representational drift"),
        areas=("systems neuroscience", "cognitive neuroscience", "computational neuroscience",
               "circuit neuroscience", "neurophysiology", "neuroimaging"),
    ),
    "materials chemistry": FieldVocab(
        methods=("density functional theory", "molecular dynamics", "X-ray diffraction",
                 "atomic layer deposition", "solvothermal synthesis", "combinatorial screening",
                 "electron microscopy", "sol-gel chemistry", "Raman spectroscopy", "basin-hopping minimization",
                 "empirical interatomic potentials", "electrochemical impedance spectroscopy"),
        objects=("perovskite absorbers", "metal-organic frameworks", "lithium-ion cathodes", "solid electrolytes",
                 "high-entropy alloys", "two-dimensional semiconductors", "zeolite catalysts",
                 "polymer membranes", "colloidal nanocrystals", "thermoelectric compounds", "photocatalysts",
                 "grain boundaries", "thin films", "ceramic coatings", "covalent organic frameworks",
                 "nanoporous graphitic sorbents"),
        data=("crystallographic repositories", "Materials Project entries", "synchrotron scattering profiles",
              "in situ TEM movies", "calorimetry measurements", "battery cycling tests",
              "combinatorial libraries", "vibrational fingerprints", "phase diagrams",
              "literature-mined recipes"),
        settings=("ambient conditions", "high-temperature operation", "aqueous electrolytes",
                  "gigapascal pressures", "stationary batteries", "flexible electronics", "humid air",
                  "corrosive solutions", "cryogenic temperatures", "packed-bed reactors"),
        properties=("ionic conductivity", "band gap", "thermal stability", "catalytic activity", "porosity",
                    "fracture toughness", "defect tolerance", "cycle life"),
        areas=("electrochemical energy conversion", "heterogeneous catalysis", "photovoltaics", "solid-state chemistry",
               "polymer physics", "inorganic synthesis"),
    ),
    "economics": FieldVocab(
        methods=("difference-in-differences designs", "instrumental variables", "regression discontinuity",
                 "computable general equilibrium", "synthetic counterfactuals", "randomized controlled trials",
                 "auction formats", "DSGE models", "optimal contracting", "panel regressions",
                 "discrete choice demand", "shift-share instruments"),
        objects=("minimum wage effects", "household consumption", "labor market frictions",
                 "sovereign debt crises", "inflation expectations", "trade tariffs", "housing prices",
                 "remittance flows", "firm markups", "monetary policy shocks", "student loans",
                 "gig economy earnings", "credit constraints", "currency transmission", "emission pricing",
                 "retirement savings"),
        data=("administrative tax records", "household panel surveys", "scanner prices", "central bank minutes",
              "customs declarations", "matched employer-employee files", "credit bureau files",
              "digital payment transfers", "decennial census microdata", "online vacancy postings"),
        settings=("emerging markets", "developing economies", "the euro area", "rural India",
                  "transition economies", "the Great Recession", "local labor markets",
                  "oligopolistic industries", "informal sectors", "commodity-exporting countries"),
        properties=("welfare effects", "price elasticity", "transmission lags", "distributional incidence",
                    "persistence", "allocative distortions", "market concentration", "intergenerational mobility"),
        areas=("labor economics", "macroeconomics", "development economics", "industrial organization",
               "fiscal policy", "international trade"),
    ),
    "music information retrieval": FieldVocab(
        methods=("chord labeling", "beat tracking", "source separation", "audio fingerprinting",
                 "symbolic music generation", "onset detection", "timbre embeddings", "cover song identification",
                 "melody extraction", "playlist continuation", "functional chord labeling",
                 "score following"),
        objects=("drum grooves", "vocal melodies", "chord progressions", "guitar tablatures",
                 "piano performances", "song lyrics", "music genres", "tempo fluctuations", "rhythmic motifs",
                 "orchestral scores", "listener preferences", "jazz solos", "music recommendations", "cadences",
                 "singing voice", "instrument timbres"),
        data=("the Million Song Dataset", "MIDI collections", "streaming listening histories",
              "Spotify listening sessions", "audio stems", "multitrack recordings", "listener mood tags",
              "scanned sheet music", "live concert broadcasts", "ethnomusicology archives"),
        settings=("Western classical music", "Carnatic music", "electronic dance music", "live performances",
                  "music streaming apps", "K-pop", "film soundtracks", "polyphonic recordings", "karaoke apps",
                  "jazz improvisation"),
        properties=("harmonic richness", "tempo steadiness", "rhythmic syncopation", "modal ambiguity",
                    "melodic contour", "loudness envelopes", "genre ambiguity", "perceived similarity"),
        areas=("music recommendation", "musicology", "sound design", "music cognition",
               "music generation", "ethnomusicology"),
    ),
}


# Topic-neutral titles (editorials: position papers, community reports): meta-research
# themes that fit any field equally.
NEUTRAL_PERIODS = ("a decade", "twenty years", "five years", "half a century", "three decades", "ten editions")
NEUTRAL_ACTIVITIES = ("shared evaluation campaigns", "open peer review", "interdisciplinary collaboration",
                      "community leaderboards", "research software maintenance", "artifact evaluation",
                      "mentoring junior researchers", "preregistered studies", "open access publishing",
                      "workshop organizing", "summer schools", "reviewer training")
NEUTRAL_TOPICS = ("reproducible research software", "open science practices", "peer review", "academic mentoring",
                  "transparent reporting", "research funding", "negative results", "citation practices",
                  "scientific communication", "research-led teaching", "conference reviewing", "durable archiving",
                  "authorship norms", "replication studies", "preprint servers", "research ethics boards")
NEUTRAL_ADJECTIVES = ("open", "transparent", "sustainable", "inclusive", "responsible", "rigorous",
                      "collaborative", "fair")
NEUTRAL_COMMUNITIES = ("academic communities", "doctoral training", "large collaborations", "small labs",
                       "multidisciplinary teams", "graduate education", "program committees")

NEUTRAL_TEMPLATES = (
    "Lessons learned from {period} of {activity}",
    "A position paper on {topic}",
    "Reflections on {topic} in {community}",
    "Towards {adjective} {topic}",
    "Why {topic} matters for {community}",
    "A manifesto for {adjective} {topic}",
    "Rethinking {topic} in {community}",
    "{adjective} {topic}: challenges and opportunities",
    "On the future of {topic}",
    "What we can learn from {period} of {activity}",
    "An essay on {topic} and {activity}",
    "A survey of {activity} in {community}",
)

# Paper title templates, shared by every field so their wording carries no field signal.
TITLE_TEMPLATES = (
    "{method} for {object} in {setting}",
    "On the {property} of {object}",
    "Inferring the {property} of {object} from {data}",
    "{object} in {setting}: evidence from {data}",
    "Revisiting {object} with {method}",
    "Scalable {method} for {object}",
    "{object} through the lens of {method}",
    "What {data} can tell us about {object}",
    "Towards robust {method} for {object} in {setting}",
    "Characterizing the {property} of {object} with {data}",
    "Learning {object} from {data}",
    "Joint modeling of {object} and {property} in {setting}",
)

# Abstract templates (two sentences), also shared by every field. Besides the title's
# slots they name a second object ({related}) or method ({method2}), as real abstracts
# mention more of their field than the title does.
ABSTRACT_TEMPLATES = (
    "We study {object} alongside {related} in {setting}. Using {data}, we show that {method} yields sharper "
    "estimates of {property} than prior approaches.",
    "This paper proposes a new approach to {object} that relies on {method}. Experiments on {data} show "
    "consistent gains in {property}, with implications for {related} and {area}.",
    "The {property} of {object} remains poorly understood. We combine {method} with {data} to "
    "characterize it in {setting} and relate it to {related}.",
    "We revisit {object} using {method} and {method2}. Our study of {data} from {setting} reveals trends in "
    "{property} missed by earlier work.",
    "Understanding {object} is a core question in {area}. We apply {method} to {data} and report "
    "new findings on {property} and {related}.",
    "Building on {data}, we examine how {property} shapes {object} in {setting}. Our findings inform {area} "
    "and the study of {related}.",
    "We introduce a framework that couples {method} with {data}. When used for {object} and {related}, it "
    "clarifies how {property} matters in {area}.",
)

# Field-neutral sentences that pad abstracts to realistic lengths, as the method, evaluation
# and outlook sentences of real abstracts do; they carry no field signal.
GENERIC_SENTENCES = (
    "We describe the experimental setup in detail and discuss its main caveats.",
    "Our analysis shows that the proposed approach remains robust under a range of choices.",
    "Everything needed to rerun the study is released.",
    "We compare against several strong baselines and report consistent improvements.",
    "The results suggest several directions for future work.",
    "Careful ablations isolates the contribution of each component.",
    "We further quantify how reliable our estimates are.",
    "These findings challenge a common assumption in prior work.",
    "Finally, we outline open questions raised by this study.",
    "The approach scales to larger settings at modest expense.",
    "We validate the main claims on held-out data.",
    "Our framework unifies several previously separate threads of work.",
    "Extensive experiments confirm the theoretical analysis.",
    "We also report negative results that may save others effort.",
    "In contrast to earlier studies, we make no restrictive assumptions.",
    "The paper closes with a discussion of practical implications.",
)

# An abstract's aside into another field, as interdisciplinary papers make; slots are filled
# from the other field's vocabulary.
CROSS_FIELD_TEMPLATES = (
    "We also draw on {method}, a technique borrowed from {area}.",
    "Connections to {object} in {area} are discussed.",
    "Our results may also interest researchers interested in {area}.",
)
