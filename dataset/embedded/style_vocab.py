"""Vocabulary of the embedded LaMP-7 task: tweets, their neutral paraphrases, style markers.

A tweet comes from a template pair: the casual body a user writes and a neutral
paraphrase of it, the kind of polished rewrite LaMP-7 gives as the question. Both fill
the same slots, so they share their content words and differ only in wording.

Style markers (openers and closings) never occur in a template or a slot value, so a
question (neutral paraphrase) carries no trace of its user's style.
"""

from __future__ import annotations

# (casual body as a user tweets it, neutral paraphrase). Bodies start lower-case unless
# they start with a slot, and end without a full stop, as tweets often do.
TWEET_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("just finished {book} and I can't stop thinking about the ending",
     "I recently finished reading {book} and I keep thinking about its ending."),
    ("finally tried the {dish} at that new spot downtown and it was so good",
     "I finally tried the {dish} at the new restaurant downtown, and it was excellent."),
    ("{team} won again tonight, what a game",
     "{team} won again this evening; it was a remarkable game."),
    ("anyone else watching {show}? I'm completely hooked",
     "Is anyone else watching {show}? I am completely captivated by it."),
    ("been listening to {artist} on repeat all day",
     "I have been listening to {artist} repeatedly throughout the day."),
    ("my {pet} knocked my {drink} off the desk again",
     "My {pet} knocked my {drink} off the desk once again."),
    ("can't believe it's {day} already, where did the week go",
     "I cannot believe it is already {day}; the week passed so quickly."),
    ("gonna spend the whole weekend {activity} and nobody can stop me",
     "I plan to spend the entire weekend {activity}, and nothing will stop me."),
    ("first {activity} session in weeks and I'm already sore",
     "This was my first {activity} session in several weeks, and I am already sore."),
    ("new {gadget} showed up today, setting it up now",
     "My new {gadget} arrived today, and I am setting it up now."),
    ("third {drink} of the day and it's not even noon",
     "I am having my third {drink} of the day, and it is not yet noon."),
    ("stuck in traffic on the way to {place} again",
     "I am stuck in traffic on my way to {place} once again."),
    ("{place} was packed today but totally worth it",
     "{place} was very crowded today, but it was completely worth it."),
    ("booked a last minute trip to {city} for next month",
     "I have booked a last-minute trip to {city} for next month."),
    ("the {weather} here is unreal today, not leaving the house",
     "The {weather} here is extraordinary today, so I am staying indoors."),
    ("spent the whole afternoon on {chore}, send snacks",
     "I spent the entire afternoon on {chore}, and I could use some snacks."),
    ("lost at {game} three times in a row tonight",
     "I lost at {game} three consecutive times this evening."),
    ("made {dish} from scratch for the first time and it actually worked",
     "I cooked {dish} from scratch for the first time, and it turned out well."),
    ("rewatching {show} for the third time, zero regrets",
     "I am watching {show} for the third time and I do not regret it."),
    ("{artist} just dropped a new album and it's all I'm playing",
     "{artist} has released a new album, and I am listening to nothing else."),
    ("back from {city} and already missing the food",
     "I have returned from {city} and I already miss the food there."),
    ("picked up {activity} this year and it's been the best decision",
     "I started {activity} this year, and it has been one of my best decisions."),
    ("my {gadget} died right in the middle of a meeting",
     "My {gadget} stopped working in the middle of a meeting."),
    ("halfway through {book} and it's even better than people said",
     "I am halfway through {book}, and it is even better than people told me."),
    ("nothing beats a {drink} on a slow {day} morning",
     "Nothing compares to a {drink} on a relaxed {day} morning."),
    ("watched {team} lose in overtime, still recovering",
     "I watched {team} lose in overtime and I am still recovering from it."),
    ("took the {pet} to {place} and everyone wanted to say hi",
     "I took my {pet} to {place}, and everyone wanted to greet it."),
    ("somebody please explain why {chore} takes so long",
     "Could someone explain why {chore} takes such a long time?"),
    ("walked around {city} all day and my feet are done",
     "I walked around {city} all day and my feet are exhausted."),
    ("trying to get back into {activity} after a long break",
     "I am trying to return to {activity} after a long break."),
    ("the {weather} ruined my plans for {place} today",
     "The {weather} ruined my plans to visit {place} today."),
    ("if you haven't read {book} yet, go read it",
     "If you have not read {book} yet, I highly recommend it."),
    ("{game} night with friends got way too competitive",
     "Our {game} night with friends became far too competitive."),
    ("finally fixed my {gadget} after an hour of googling",
     "After an hour of searching online, I finally fixed my {gadget}."),
    ("a {drink} and {book}, perfect {day}",
     "A {drink} and a copy of {book} make for a perfect {day}."),
    ("the line at {place} was ridiculous this morning",
     "The line at {place} was extremely long this morning."),
)

# Values of each slot; one draw fills the slot in both texts of a pair.
SLOTS: dict[str, tuple[str, ...]] = {
    "book": ("The Midnight Library", "Project Hail Mary", "Dune", "Circe", "The Overstory", "Educated",
             "Klara and the Sun", "Pachinko", "The Hobbit", "Station Eleven", "Normal People", "Sapiens"),
    "show": ("Severance", "The Bear", "Succession", "Ted Lasso", "Only Murders in the Building", "Slow Horses",
             "Abbott Elementary", "Shogun", "Arcane", "The Crown"),
    "artist": ("Fleetwood Mac", "Phoebe Bridgers", "Kendrick Lamar", "Radiohead", "Taylor Swift", "Bon Iver",
               "Daft Punk", "Khruangbin", "Billie Eilish", "Arctic Monkeys", "Norah Jones", "Tame Impala"),
    "team": ("the Lakers", "the Yankees", "Arsenal", "the Packers", "the Warriors", "Liverpool", "the Red Sox",
             "the Maple Leafs", "Barcelona", "the Celtics"),
    "dish": ("ramen", "tacos al pastor", "banana bread", "pad thai", "sourdough pizza", "shakshuka", "pho",
             "chicken curry", "falafel wraps", "lemon cake", "dumplings", "mushroom risotto"),
    "drink": ("cold brew", "matcha latte", "chai", "iced coffee", "green tea", "hot chocolate", "espresso",
              "lemonade"),
    "place": ("the farmers market", "the climbing gym", "the library", "the beach", "the park", "the bookstore",
              "the airport", "the dentist", "the hardware store", "the museum"),
    "city": ("Lisbon", "Chicago", "Tokyo", "Montreal", "Austin", "Edinburgh", "Seoul", "Denver", "Mexico City",
             "Copenhagen"),
    "activity": ("running", "painting", "baking", "hiking", "knitting", "cycling", "gardening", "swimming",
                 "journaling", "yoga", "woodworking", "photography"),
    "pet": ("cat", "dog", "puppy", "kitten", "parrot", "rabbit"),
    "gadget": ("laptop", "phone", "headphones", "e-reader", "keyboard", "camera", "smartwatch", "coffee grinder"),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "weather": ("rain", "snow", "heat", "wind", "fog", "sunshine"),
    "chore": ("laundry", "the dishes", "taxes", "meal prep", "vacuuming", "grocery shopping"),
    "game": ("chess", "Catan", "Mario Kart", "trivia", "poker", "Scrabble", "Monopoly", "bingo"),
}

# A user's signature, appended to every tweet they write.
CLOSINGS: tuple[str, ...] = ("#staycurious", "#onwards", "#justsaying", "\u2014 J.", "~ Sam", "xoxo",
                             "(peace and love)", "\u2014 more soon")
# How a user starts every tweet; some users use none.
OPENERS: tuple[str, ...] = ("Honestly,", "Quick thought:", "Random update:", "Not gonna lie,")
# A user's favourite hashtag, added to many of their tweets.
HASHTAGS: tuple[str, ...] = ("#mondaymood", "#goodvibes", "#nofilter", "#lifelately", "#smallwins", "#dailylife",
                             "#weekendmode", "#truestory")
# Words any user drops into a tweet now and then, at random: no paraphrase keeps them and no
# history predicts them.
INTERJECTIONS: tuple[str, ...] = ("lol", "omg", "ugh", "haha", "tbh", "ngl", "wow", "yay", "smh", "literally",
                                  "seriously", "fr", "idk", "bruh")
# Words the paraphrase wraps around a tweet, as polished rewrites often do; the user never
# wrote them.
PARAPHRASE_OPENINGS: tuple[str, ...] = ("Today,", "As an update,", "To share some news,", "For what it is worth,",
                                        "In brief,", "As it happens,", "On a personal note,", "To put it simply,")
PARAPHRASE_ENDINGS: tuple[str, ...] = ("It is worth mentioning.", "That is my update for now.",
                                       "I thought this was worth sharing.", "It has been quite an experience.",
                                       "I wanted to share this with everyone.", "Such is life at the moment.")
# Casual spellings users type now and then, word by word (whole words only).
CASUAL_SPELLINGS: dict[str, str] = {"you": "u", "your": "ur", "are": "r", "really": "rly", "people": "ppl",
                                    "tonight": "2nite", "because": "bc", "with": "w/", "and": "&", "the": "da",
                                    "so": "soooo", "my": "mah", "for": "4", "again": "agaaain"}
